"""Corrections as training data: the explicit feedback records that carry a corrected answer, the
operator's verdict on each (a rejected correction never trains) and the adapter version that
learned it. The refinement job (service.distill.corrections) reads them from here.

A correction trains unless an operator rejected it: a user who typed the right answer has done
the reviewing a principle needs an operator for. Every verdict is written with its audit row.
"""

from __future__ import annotations

import json
import time

from service.store.db import BLANK, Repository

STATUSES = ("accepted", "rejected")

_SELECT = ("SELECT f.id, f.created, f.completion_id, f.conversation_id, f.correction, f.comment, f.reason, f.thumb, "
           "f.user, COALESCE(f.correction_status, 'accepted') AS status, f.correction_distilled AS distilled_version, "
           "c.messages AS messages, c.response AS response, c.adapter_version AS adapter_version "
           "FROM feedback f JOIN completions c ON c.id = f.completion_id "
           f"WHERE TRIM(COALESCE(f.correction, ''), {BLANK}) != ''")


class Corrections(Repository):
    def list(self, status: str | None = None, limit: int = 1000) -> list[dict]:
        """Corrections with the request and answer they correct, newest first."""
        sql, params = _SELECT, []
        if status is not None:
            sql, params = sql + " AND COALESCE(f.correction_status, 'accepted') = ?", [status]
        return self.database.rows(sql + " ORDER BY f.created DESC LIMIT ?", params + [limit])

    def get(self, feedback_id: str) -> dict | None:
        return self.database.one(_SELECT + " AND f.id = ?", [feedback_id])

    def trainable(self) -> list[dict]:
        """Every correction no operator rejected, oldest first (a later one of a request wins)."""
        return self.database.rows(_SELECT + " AND COALESCE(f.correction_status, 'accepted') != 'rejected' "
                                  "ORDER BY f.created")

    def waiting(self) -> int:
        """Trainable corrections no adapter version has learned yet."""
        row = self.database.one(f"SELECT COUNT(*) AS n FROM feedback WHERE TRIM(COALESCE(correction, ''), {BLANK}) != '' "
                                "AND COALESCE(correction_status, 'accepted') != 'rejected' "
                                "AND correction_distilled IS NULL")
        return row["n"]

    def review(self, feedback_id: str, status: str, actor: str, reason: str | None = None) -> dict | None:
        """Accept or reject a correction (None when there is no such correction)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        before = self.get(feedback_id)
        if before is None:
            return None
        with self.database.atomic():
            self.database.execute("UPDATE feedback SET correction_status = ? WHERE id = ?", [status, feedback_id])
            self.database.db["audit"].insert({
                "at": time.time(), "actor": actor, "action": "reject" if status == "rejected" else "accept",
                "object_type": "correction", "object_id": feedback_id,
                "before": json.dumps({"status": before["status"]}), "after": json.dumps({"status": status}),
                "reason": reason})
        return self.get(feedback_id)

    def thumbs(self) -> list[dict]:
        """The latest thumb on each answered request (with its request and answer), oldest first,
        and whether that request also got a correction or an accepted better answer for a
        complaint (service.store.refinements), which trains as a pair instead."""
        return self.database.rows(
            "SELECT f.id, f.completion_id, f.thumb, c.messages AS messages, c.response AS response, "
            "EXISTS(SELECT 1 FROM feedback g WHERE g.completion_id = f.completion_id "
            f"AND TRIM(COALESCE(g.correction, ''), {BLANK}) != '' "
            "AND COALESCE(g.correction_status, 'accepted') != 'rejected') "
            "OR EXISTS(SELECT 1 FROM refinements r WHERE r.completion_id = f.completion_id "
            "AND r.status = 'accepted') AS corrected "
            "FROM feedback f JOIN completions c ON c.id = f.completion_id "
            "WHERE f.thumb IS NOT NULL AND c.status = 'ok' AND f.created = (SELECT MAX(h.created) FROM feedback h "
            "WHERE h.completion_id = f.completion_id AND h.thumb IS NOT NULL) ORDER BY f.created")

    def mark_distilled(self, feedback_ids: list[str], version_id: str) -> None:
        with self.database.atomic():
            for fid in feedback_ids:
                self.database.execute("UPDATE feedback SET correction_distilled = ? WHERE id = ? "
                                      "AND correction_distilled IS NULL", [version_id, fid])
