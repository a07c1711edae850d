"""Principles under review and their audit log: every change of a principle is one transaction with
its audit row (who, what, before, after, why)."""

from __future__ import annotations

import json
import time

from service.store.db import Repository, encode, where


def _dump(row: dict | None) -> str | None:
    return None if row is None else json.dumps(row, ensure_ascii=False, default=str)


class Principles(Repository):
    def list(self, status: str | None = None, min_support: int | None = None,
             min_agreement: float | None = None, limit: int = 200) -> list[dict]:
        sql, params = where([("status = ?", status), ("support >= ?", min_support), ("agreement >= ?", min_agreement)])
        return self.database.rows(f"SELECT * FROM principles{sql} ORDER BY support DESC, created DESC LIMIT ?",
                                  params + [limit])

    def get(self, principle_id: str) -> dict | None:
        return self.database.one("SELECT * FROM principles WHERE id = ?", [principle_id])

    def approved_for_prompt(self) -> list[dict]:
        """Approved principles applied in context (mode prompt or both), oldest first."""
        return self.database.rows(
            "SELECT * FROM principles WHERE status = 'approved' AND mode IN ('prompt', 'both') ORDER BY created")

    def merged_into(self, principle_id: str) -> list[str]:
        """Ids of the principles merged into this one."""
        return [r["id"] for r in self.database.rows("SELECT id FROM principles WHERE merged_into = ?", [principle_id])]

    def write(self, actor: str, action: str, before: dict | None, after: dict, reason: str | None = None) -> None:
        """Insert or replace a principle with its audit row, in one transaction."""
        db = self.database.db
        with self.database.atomic():
            db["principles"].upsert(encode(after), pk="id")
            db["audit"].insert({"at": time.time(), "actor": actor, "action": action, "object_type": "principle",
                                "object_id": after["id"], "before": _dump(before), "after": _dump(after),
                                "reason": reason})

    def audit(self, object_id: str | None = None, limit: int = 200) -> list[dict]:
        sql, params = "SELECT * FROM audit", []
        if object_id:
            sql, params = sql + " WHERE object_id = ?", [object_id]
        return self.database.rows(sql + " ORDER BY id DESC LIMIT ?", params + [limit])
