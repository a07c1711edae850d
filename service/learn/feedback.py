"""Explicit feedback as it arrives: checked, linked to its completion and conversation, on disk
before the answer, and idempotent under the client's own id.

A retry with the same id and the same values gets the stored record back (200); the same id with
other values is a 409 (`idempotency_mismatch`): the first record stands. Stored feedback wakes
the background analyst, which reads comments and corrections for principles.
"""

from __future__ import annotations

import time
from typing import Callable

from service.errors import APIError
from service.metrics import Metrics
from service.settings import Settings
from service.store import Store, new_id

FIELDS = ("thumb", "score", "reason", "comment", "correction", "user")


class FeedbackService:
    def __init__(self, settings: Settings, store: Store, metrics: Metrics, on_stored: Callable[[], None] | None = None):
        self.settings, self.store, self.metrics = settings, store, metrics
        self.on_stored = on_stored or (lambda: None)

    def record(self, completion_id: str, values: dict, feedback_id: str | None = None) -> tuple[dict, bool]:
        """Store feedback on a completion. Returns (record, created). Raises APIError."""
        s = self.settings
        comment, correction = values.get("comment"), values.get("correction")
        if comment is not None and len(comment) > s.max_comment_chars:
            raise APIError(400, f"comment is longer than {s.max_comment_chars} characters", "comment", "comment_too_long")
        if correction is not None and len(correction) > s.max_correction_chars:
            raise APIError(400, f"correction is longer than {s.max_correction_chars} characters", "correction",
                           "correction_too_long")
        completion = self.store.exchanges.get(completion_id)
        if completion is None:
            raise APIError(404, f"no completion with id '{completion_id}'", "completion_id", "completion_not_found")
        record = {"id": feedback_id or new_id("fb-"), "created": time.time(), "completion_id": completion_id,
                  "conversation_id": completion["conversation_id"], **{k: values.get(k) for k in FIELDS}}
        stored, created = self.store.feedback.add(record)
        if stored["completion_id"] != completion_id:
            raise APIError(409, f"feedback id '{record['id']}' is already used for another completion", "id", "id_conflict")
        if not created:
            differ = [k for k in FIELDS if stored.get(k) != record.get(k)]
            if differ:  # a retry repeats its body; a different body under the same id is a mistake
                raise APIError(409, f"feedback id '{record['id']}' is already used with other values ({', '.join(differ)}); "
                                    "send new feedback under a new id, or DELETE the old one first",
                               "id", "idempotency_mismatch")
            return stored, False
        self.on_stored()
        for kind in ("thumb", "score", "reason", "comment", "correction"):
            if stored.get(kind) is not None:
                self.metrics.feedback.labels(f"{kind}_{stored[kind]}" if kind == "thumb" else kind).inc()
        return stored, True
