"""Complaints and the better answers sampled for them (DRIFT): the store side.

A complaint is dissatisfaction with a reason but no corrected answer: a thumbs-down (or a score
of 1-2) with a comment or reason, or a natural follow-up turn that says the answer was wrong
(`aware_without_correction`) or asks again (`repeat_rephrase`). The background analyst samples a
better answer for each (service.learn.complaints) and verifies it; the operator then accepts,
edits or rejects it. Only an accepted one trains, as a pair (the better answer over ours).

Statuses: `proposed` (verified, waiting for the operator), `unverified` (the check failed or no
answer came; an operator may still accept it by writing the answer), `accepted`, `rejected`.
Each complaint gets one row (UNIQUE source, source_id), so the analyst never samples twice.
"""

from __future__ import annotations

import json
import time

from service.store.db import BLANK, Repository, answered_by, new_id

STATUSES = ("proposed", "unverified", "accepted", "rejected")
VERDICTS = ("accepted", "rejected")
NATURAL_COMPLAINTS = ("aware_without_correction", "repeat_rephrase")
# A complaint about an answer that also got a correction trains as that correction instead.
_NOT_CORRECTED = (f"NOT EXISTS (SELECT 1 FROM feedback g WHERE g.completion_id = c.id "
                  f"AND TRIM(COALESCE(g.correction, ''), {BLANK}) != '' "
                  "AND COALESCE(g.correction_status, 'accepted') != 'rejected')")

_SELECT = ("SELECT r.*, c.messages AS messages, c.response AS response, c.adapter_version AS adapter_version "
           "FROM refinements r JOIN completions c ON c.id = r.completion_id")


class Refinements(Repository):
    def complaints(self, limit: int = 20) -> list[dict]:
        """Complaints no refinement was sampled for yet, oldest first, with the exchange they are
        about: {source, source_id, created, completion_id, complaint, messages, response, adapter_version,
        answered_by (the adapter whose weights wrote the answer, None for the base weights), category
        (of a natural complaint)}."""
        return self.database.rows(
            "SELECT * FROM ("
            "SELECT 'feedback' AS source, f.id AS source_id, f.created AS created, c.id AS completion_id, "
            f"COALESCE(NULLIF(TRIM(f.comment, {BLANK}), ''), TRIM(f.reason, {BLANK})) AS complaint, "
            "c.messages AS messages, c.response AS response, c.adapter_version AS adapter_version, "
            f"{answered_by('c')}, NULL AS category FROM feedback f JOIN completions c ON c.id = f.completion_id "
            "WHERE (f.thumb = 'down' OR f.score <= 2) AND c.status = 'ok' "
            f"AND TRIM(COALESCE(f.comment, '') || COALESCE(f.reason, ''), {BLANK}) != '' "
            f"AND TRIM(COALESCE(f.correction, ''), {BLANK}) = '' AND {_NOT_CORRECTED} "
            "AND NOT EXISTS (SELECT 1 FROM refinements r WHERE r.source = 'feedback' AND r.source_id = f.id) "
            "UNION ALL "
            f"SELECT 'natural', n.id, n.created, c.id, n.user_turn, c.messages, c.response, c.adapter_version, "
            f"{answered_by('c')}, n.category "
            "FROM natural_feedback n JOIN completions c ON c.id = n.completion_id "
            f"WHERE n.category IN ({', '.join('?' * len(NATURAL_COMPLAINTS))}) AND c.status = 'ok' "
            f"AND {_NOT_CORRECTED} "
            "AND NOT EXISTS (SELECT 1 FROM refinements r WHERE r.source = 'natural' AND r.source_id = n.id)"
            ") ORDER BY created LIMIT ?", list(NATURAL_COMPLAINTS) + [limit])

    def add(self, complaint: dict, candidate: str | None, verified: bool, method: str | None, detail: str) -> dict:
        """The sampled answer for one complaint (a row of `complaints`) and its verification."""
        now = time.time()
        row = {"id": new_id("ref_"), "created": now, "updated": now, "completion_id": complaint["completion_id"],
               "source": complaint["source"], "source_id": complaint["source_id"], "complaint": complaint["complaint"],
               "candidate": candidate, "verified": int(bool(verified)), "method": method, "detail": detail,
               "status": "proposed" if verified else "unverified"}
        self.database.db["refinements"].insert(row)
        return self.get(row["id"])

    def get(self, refinement_id: str) -> dict | None:
        return self.database.one(_SELECT + " WHERE r.id = ?", [refinement_id])

    def list(self, status: str | None = None, limit: int = 1000) -> list[dict]:
        """Refinements with the request and answer they are about, newest first."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        sql, params = (_SELECT + " WHERE r.status = ?", [status]) if status else (_SELECT, [])
        return self.database.rows(sql + " ORDER BY r.created DESC LIMIT ?", params + [limit])

    def counts(self) -> dict[str, int]:
        rows = self.database.rows("SELECT status, COUNT(*) AS n FROM refinements GROUP BY status")
        return {s: 0 for s in STATUSES} | {r["status"]: r["n"] for r in rows}

    def review(self, refinement_id: str, status: str, actor: str, reason: str | None = None,
               candidate: str | None = None) -> dict | None:
        """Accept (optionally with the operator's own better answer) or reject one (None: no such
        refinement). Accepting an unverified one needs the operator's answer: ValueError."""
        if status not in VERDICTS:
            raise ValueError(f"status must be one of {VERDICTS}")
        before = self.get(refinement_id)
        if before is None:
            return None
        candidate = candidate.strip() if candidate is not None else None
        if candidate == "":
            raise ValueError("the better answer is empty")
        if status == "accepted" and candidate is None and not before["verified"]:
            raise ValueError("this answer failed its verification: accept it with a better answer of your own")
        change = {"status": status, "updated": time.time()}
        if candidate is not None and candidate != (before["candidate"] or "").strip():
            change.update(candidate=candidate, edited_by=actor)
        with self.database.atomic():
            self.database.db["refinements"].update(refinement_id, change)
            self.database.db["audit"].insert({
                "at": time.time(), "actor": actor, "action": "accept" if status == "accepted" else "reject",
                "object_type": "refinement", "object_id": refinement_id,
                "before": json.dumps({"status": before["status"], "candidate": before["candidate"]}, ensure_ascii=False),
                "after": json.dumps({k: change.get(k, before[k]) for k in ("status", "candidate")}, ensure_ascii=False),
                "reason": reason})
        return self.get(refinement_id)

    def trainable(self) -> list[dict]:
        """Accepted refinements, oldest first, shaped like corrections (service.store.corrections):
        `correction` is the better answer, so the job treats both alike."""
        return self.database.rows(
            "SELECT r.id, r.created, r.completion_id, r.complaint, r.source AS complaint_source, "
            "r.candidate AS correction, r.distilled_version, c.messages AS messages, c.response AS response "
            f"FROM refinements r JOIN completions c ON c.id = r.completion_id WHERE r.status = 'accepted' "
            f"AND TRIM(COALESCE(r.candidate, ''), {BLANK}) != '' ORDER BY r.created")

    def waiting(self) -> int:
        """Accepted refinements no adapter version has learned yet."""
        return self.database.one("SELECT COUNT(*) AS n FROM refinements WHERE status = 'accepted' "
                                 "AND distilled_version IS NULL")["n"]

    def mark_distilled(self, refinement_ids: list[str], version_id: str) -> None:
        with self.database.atomic():
            for rid in refinement_ids:
                self.database.execute("UPDATE refinements SET distilled_version = ? WHERE id = ? "
                                      "AND distilled_version IS NULL", [version_id, rid])
