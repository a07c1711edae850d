"""Principles under review: the operations operators perform, each written to the audit log.

The HTTP API, the review page and the CLI all go through `PrincipleBook`, so an action has the
same rules and leaves the same audit record whichever way it was taken. The queries are the
store's (service.store.principles); the rules of each action are here.
"""

from __future__ import annotations

import time
from typing import Any

from policies.checks import parse_check
from policies.text import last_user_text
from service.store import Store, new_id

STATUSES = ("candidate", "approved", "rejected", "merged")
MODES = ("prompt", "adapter", "both")
EDITABLE = ("text", "domain", "effect", "checks", "mode")


class ReviewError(ValueError):
    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


class PrincipleBook:
    def __init__(self, store: Store):
        self.store = store

    # -- reading -------------------------------------------------------------------------
    def list(self, status: str | None = None, min_support: int | None = None,
             min_agreement: float | None = None, limit: int = 200) -> list[dict]:
        return self.store.principles.list(status, min_support, min_agreement, limit)

    def get(self, principle_id: str) -> dict:
        row = self.store.principles.get(principle_id)
        if row is None:
            raise ReviewError(f"no principle with id '{principle_id}'", 404, "principle_id")
        return row

    def evidence(self, principle: dict) -> list[dict]:
        """The feedback a principle came from, with the exchange and a link to its conversation."""
        out = []
        for ref in principle["evidence"]:
            kind, ref_id = ref.get("kind"), ref.get("id")
            if kind == "feedback":
                row = self.store.feedback.with_exchange(ref_id)
                text = row and (row.get("comment") or row.get("correction"))
            elif kind == "natural":
                row = self.store.natural.with_exchange(ref_id)
                text = row and (row.get("span") or row.get("user_turn"))
            else:
                row, text = None, None
            if row is None:
                out.append({"kind": kind, "id": ref_id, "missing": True})
                continue
            prompt = last_user_text(row["messages"])
            out.append({
                "kind": kind, "id": ref_id, "text": text, "completion_id": row["completion_id"],
                "conversation_id": row["conversation_id"], "prompt": prompt, "response": row["response"],
                "conversation_url": f"/admin/conversations/{row['conversation_id']}",
            })
        return out

    def audit(self, object_id: str | None = None, limit: int = 200) -> list[dict]:
        return self.store.principles.audit(object_id, limit)

    def approved_for_prompt(self) -> list[dict]:
        return self.store.principles.approved_for_prompt()

    # -- writing -------------------------------------------------------------------------
    def _write(self, actor: str, action: str, before: dict | None, after: dict, reason: str | None = None) -> dict:
        self.store.principles.write(actor, action, before, after, reason)
        return self.get(after["id"])

    def mark_distilled(self, principle_id: str, version: str, actor: str) -> dict:
        """Record the adapter version that first distilled this principle (audited like any change)."""
        before = self.get(principle_id)
        if before is None or before.get("distilled_version") == version:
            return before
        return self._write(actor, "distil", before, {**before, "distilled_version": version, "updated": time.time()})

    def create(self, fields: dict[str, Any], actor: str = "system") -> dict:
        now = time.time()
        row = {"id": new_id("pr-"), "created": now, "updated": now, "status": "candidate", "mode": "prompt",
               "support": 1, "checks": [], "evidence": [], "source": "critique", **fields}
        return self._write(actor, "propose", None, row)

    def write_new(self, fields: dict[str, Any], actor: str) -> dict:
        """A principle an operator wrote: checked like an edit, then a candidate like any other."""
        for key in ("text", "domain"):
            if not str(fields.get(key) or "").strip():
                raise ReviewError(f"{key} must not be empty", 400, key)
        mode = fields.get("mode") or "prompt"
        if mode not in MODES:
            raise ReviewError(f"mode must be one of {MODES}", 400, "mode")
        checks = validate_checks(fields.get("checks") or [])
        return self.create({"text": fields["text"].strip(), "domain": fields["domain"].strip(),
                            "effect": (fields.get("effect") or fields["text"]).strip(), "checks": checks, "mode": mode,
                            "source": "operator", "proposer": actor, "confidence": 1.0, "evidence": [], "support": 1},
                           actor=actor)

    def update(self, principle_id: str, changes: dict[str, Any], actor: str) -> dict:
        before = self.get(principle_id)
        bad = set(changes) - set(EDITABLE)
        if bad:
            raise ReviewError(f"cannot edit {sorted(bad)}; editable: {list(EDITABLE)}", 400, sorted(bad)[0])
        if "mode" in changes and changes["mode"] not in MODES:
            raise ReviewError(f"mode must be one of {MODES}", 400, "mode")
        for key in ("text", "domain", "effect"):
            if key in changes and not str(changes[key]).strip():
                raise ReviewError(f"{key} must not be empty", 400, key)
        if "checks" in changes:
            changes["checks"] = validate_checks(changes["checks"])
        after = {**before, **changes, "updated": time.time()}
        return self._write(actor, "edit", before, after)

    def approve(self, principle_id: str, actor: str, mode: str | None = None) -> dict:
        before = self.get(principle_id)
        if before["status"] == "merged":
            raise ReviewError("this principle was merged into another; approve that one", 409, "principle_id")
        if mode is not None and mode not in MODES:
            raise ReviewError(f"mode must be one of {MODES}", 400, "mode")
        after = {**before, "status": "approved", "mode": mode or before["mode"], "updated": time.time()}
        return self._write(actor, "approve", before, after)

    def reject(self, principle_id: str, actor: str, reason: str) -> dict:
        if not reason or not reason.strip():
            raise ReviewError("a reason is required to reject", 400, "reason")
        before = self.get(principle_id)
        after = {**before, "status": "rejected", "reject_reason": reason, "updated": time.time()}
        return self._write(actor, "reject", before, after, reason)

    def merge(self, principle_id: str, into_id: str, actor: str) -> dict:
        """`principle_id` joins `into_id`: evidence and support move over; it is kept as merged."""
        if principle_id == into_id:
            raise ReviewError("cannot merge a principle into itself", 400, "into")
        src, dst = self.get(principle_id), self.get(into_id)
        if dst["status"] in ("merged", "rejected"):
            raise ReviewError(f"cannot merge into a {dst['status']} principle", 409, "into")
        if src["status"] == "merged":  # its evidence already lives in another principle
            raise ReviewError(f"{principle_id} was already merged into {src['merged_into']}", 409, "id")
        evidence = dst["evidence"] + [e for e in src["evidence"] if e not in dst["evidence"]]
        merged_dst = {**dst, "evidence": evidence, "support": len(evidence), "updated": time.time()}
        with self.store.atomic():  # both principles change, or neither
            self._write(actor, "merge_in", dst, merged_dst)
            self._write(actor, "merge", src, {**src, "status": "merged", "merged_into": into_id, "updated": time.time()})
            # Principles merged into the source earlier now point where their evidence went.
            for child in self.store.principles.merged_into(principle_id):
                before = self.get(child)
                self._write(actor, "merge_repoint", before, {**before, "merged_into": into_id, "updated": time.time()})
        return self.get(into_id)

    def add_evidence(self, principle_id: str, refs: list[dict], actor: str = "system") -> dict:
        before = self.get(principle_id)
        evidence = before["evidence"] + [r for r in refs if r not in before["evidence"]]
        return self._write(actor, "support", before, {**before, "evidence": evidence, "support": len(evidence),
                                                       "updated": time.time()})

    def set_scores(self, principle_id: str, votes: dict, agreement: float | None, relevance: float | None) -> dict:
        before = self.get(principle_id)
        return self._write("system", "score", before, {**before, "votes": votes, "agreement": agreement,
                                                        "relevance": relevance, "updated": time.time()})


def validate_checks(checks: list) -> list[str]:
    """Checks are kept in their compact text form (`starts_with "Summary:"`); each must parse."""
    if not isinstance(checks, list):
        raise ReviewError("checks must be a list of strings", 400, "checks")
    out = []
    for c in checks:
        try:
            parse_check(c)
        except Exception as exc:
            raise ReviewError(f"check {c!r} does not parse: {exc}", 400, "checks") from exc
        out.append(c)
    return out
