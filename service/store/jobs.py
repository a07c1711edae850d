"""Refinement jobs: the queue (one running at a time, across processes), heartbeats, results, and the
data sets jobs made.

Claiming takes the write lock first (BEGIN IMMEDIATE), so two workers can never both claim; a
job whose worker is gone goes back to the queue only if its heartbeat is still the one seen, so a
worker that beat in between keeps it. Whether a worker is gone is decided by the caller
(service.distill.worker), which knows about hosts and process ids.
"""

from __future__ import annotations

import json
import time

from service.store.db import Repository, new_id


class Jobs(Repository):
    def enqueue(self, principle_ids: list[str] | None, requested_by: str, params: dict | None = None,
                kind: str = "refine") -> dict:
        job = {"id": new_id("job-"), "created": time.time(), "kind": kind, "status": "queued",
               "principle_ids": json.dumps(principle_ids) if principle_ids else None,
               "params": json.dumps(params or {}), "requested_by": requested_by}
        with self.database.atomic():
            self.database.db["jobs"].insert(job)
        return self.get(job["id"])

    def get(self, job_id: str) -> dict | None:
        return self.database.one("SELECT * FROM jobs WHERE id = ?", [job_id])

    def list(self, status: str | None = None, limit: int = 100) -> list[dict]:
        sql, params = "SELECT * FROM jobs", []
        if status:
            sql, params = sql + " WHERE status = ?", [status]
        return self.database.rows(sql + " ORDER BY created DESC LIMIT ?", params + [limit])

    def running(self) -> dict | None:
        return self.database.one("SELECT * FROM jobs WHERE status = 'running' LIMIT 1")

    def all_running(self) -> list[dict]:
        return self.database.rows("SELECT * FROM jobs WHERE status = 'running'")

    def requeue(self, job: dict, error: str) -> bool:
        """Put a running job back in the queue, unless its heartbeat moved since `job` was read."""
        with self.database.atomic():
            cur = self.database.execute(
                "UPDATE jobs SET status = 'queued', pid = NULL, host = NULL, error = ? "
                "WHERE id = ? AND status = 'running' AND heartbeat IS ?", [error, job["id"], job["heartbeat"]])
        return cur.rowcount > 0

    def claim(self, pid: int, host: str) -> dict | None:
        """Take the oldest queued job, unless one is running: one job at a time, across processes."""
        with self.database.atomic():
            if self.database.execute("SELECT 1 FROM jobs WHERE status = 'running'").fetchone():
                return None
            row = self.database.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                return None
            now = time.time()
            self.database.execute(
                "UPDATE jobs SET status = 'running', started = COALESCE(started, ?), heartbeat = ?, pid = ?, host = ?, "
                "attempts = attempts + 1 WHERE id = ?", [now, now, pid, host, row[0]])
        return self.get(row[0])

    def beat(self, job_id: str, stage: str | None = None) -> None:
        with self.database.atomic():
            if stage is None:
                self.database.execute("UPDATE jobs SET heartbeat = ? WHERE id = ?", [time.time(), job_id])
            else:
                self.database.execute("UPDATE jobs SET heartbeat = ?, stage = ? WHERE id = ?",
                                      [time.time(), stage, job_id])

    def finish(self, job_id: str, status: str, result: dict | None = None, error: str | None = None) -> None:
        with self.database.atomic():
            self.database.execute(
                "UPDATE jobs SET status = ?, finished = ?, result = ?, error = ?, pid = NULL, host = NULL WHERE id = ?",
                [status, time.time(), json.dumps(result, default=str) if result is not None else None, error, job_id])

    # -- data sets ---------------------------------------------------------------------------
    def record_dataset(self, content_hash: str, principle_id: str, job_id: str, stats: dict, path: str) -> None:
        with self.database.atomic():
            self.database.db["datasets"].upsert({"hash": content_hash, "created": time.time(),
                                                 "principle_id": principle_id, "job_id": job_id,
                                                 "stats": json.dumps(stats), "path": path}, pk="hash")

    def datasets(self, principle_id: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM datasets", []
        if principle_id:
            sql, params = sql + " WHERE principle_id = ?", [principle_id]
        return self.database.rows(sql + " ORDER BY created", params)
