"""Complaints -> better answers to review (DRIFT), in the background analyst.

For each complaint without a correction (service.store.refinements), the version that gave the
answer is asked again with the complaint in front of it (policies.complaints), greedily, off the
request path (the engine's background generation). The answer is checked for degeneration, then
verified by the complaint's own checks, the teacher where it is capable, or the encoder, and
stored with its verdict for an operator to accept, edit or reject. A teacher that never answers
in the schema is recorded in llm_failures and the refinement is left unverified: nothing is
dropped without a trace.
"""

from __future__ import annotations

import logging
from typing import Callable

from adapters.guard import degenerate
from policies.complaints import (StructuredFailure, Verification, refinement_messages, verify_by_encoder,
                                 verify_by_rules, verify_by_teacher)
from policies.teacher import is_capable
from policies.text import last_user_text
from service.serving.engines.base import Engine
from service.store import Store

log = logging.getLogger(__name__)


class ComplaintRefiner:
    def __init__(self, store: Store, engine: Engine, teacher, encoder: Callable[[], object | None],
                 max_tokens: int = 256):
        self.store, self.engine, self.teacher, self.encoder = store, engine, teacher, encoder
        self.max_tokens = max_tokens

    def run(self, limit: int = 4) -> int:
        """Sample and verify a better answer for up to `limit` complaints. Returns how many."""
        done = 0
        for complaint in self.store.refinements.complaints(limit):
            candidate, v = self._sample(complaint)
            if v is None:
                v = self.verify(complaint, candidate)
            self.store.refinements.add(complaint, candidate, v.passed, v.method, v.detail)
            done += 1
        return done

    def _sample(self, complaint: dict) -> tuple[str | None, Verification | None]:
        messages = refinement_messages(complaint["messages"], complaint["response"] or "", complaint["complaint"],
                                       natural=complaint["source"] == "natural")
        version = complaint["answered_by"]  # the weights that wrote the answer complained about
        try:
            self.engine.acquire(version)
        except KeyError:  # that version is gone: the base model answers instead
            version = None
        try:
            answer = self.engine.generate_blocking(messages, self.max_tokens, adapter=version).strip()
        except Exception as exc:
            log.warning("no better answer for complaint %s: %s", complaint["source_id"], exc)
            return None, Verification(False, "none", f"the engine gave no answer: {type(exc).__name__}: {exc}"[:300])
        finally:
            self.engine.release(version)
        why = degenerate(answer)
        if why:
            return answer, Verification(False, "none", f"degenerate: {why}")
        return answer, None

    def verify(self, complaint: dict, candidate: str | None) -> Verification:
        text, original = complaint["complaint"], complaint["response"] or ""
        request = last_user_text(complaint["messages"])
        by_rules = verify_by_rules(text, original, candidate)
        if by_rules is not None:
            return by_rules
        if is_capable(self.teacher):
            try:
                return verify_by_teacher(text, request, original, candidate, self.teacher)
            except StructuredFailure as exc:
                self.store.failures.record("complaint_verification", complaint["source_id"], exc.schema,
                                           exc.raw, exc.errors)
                return Verification(False, "teacher", "the teacher never answered in the schema (see llm_failures)")
        encoder = self.encoder()
        if encoder is None:
            return Verification(False, "none", "nothing could verify it: no checks stated, no capable teacher, no encoder")
        return verify_by_encoder(text, request, original, candidate, encoder.embed_one,
                                 repeated=complaint.get("category") == "repeat_rephrase")
