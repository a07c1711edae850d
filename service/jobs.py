"""The refinement job queue: one job at a time, state in SQLite, resumable after a crash.

A job runs in its own process (`refinery refine --worker`, started by the server's scheduler
or by cron/systemd/Kubernetes), never inside the serving process: training takes the CPU for
minutes, and a crash in it must not take the server down. The worker claims the oldest queued
job in one transaction, beats a heartbeat while it works, and keeps each stage's output on
disk, so a job whose worker died is put back in the queue and resumes after its last finished
stage.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from service.settings import Settings
from service.store import Store, atomic, new_id

log = logging.getLogger(__name__)

STALE_AFTER_S = 120  # a worker on another machine that has not beaten for this long is taken back
# A worker on this machine whose process is alive keeps its job even when its heartbeat is late
# (a busy disk, a locked database): running one job twice is worse than waiting. Only this long
# a silence (a hung process, or its pid taken by another process) gives the job back.
LOCAL_STALE_AFTER_S = 20 * 60


def host_id() -> str:
    """This machine (and boot): a pid is checked only where it was issued. Two containers of one
    pod or host share neither hostname nor pid namespace in the usual set-ups."""
    boot = ""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        pass
    return f"{socket.gethostname()}/{boot}"


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_gone(job: dict, now: float | None = None) -> bool:
    """Has the worker of this running job stopped? Its pid decides on its own machine, its
    heartbeat elsewhere (a cron pod's pid means nothing to the server's pod)."""
    now = now or time.time()
    silent_for = now - (job.get("heartbeat") or 0)
    if job.get("host") == host_id():
        return not _pid_alive(job.get("pid")) or silent_for > LOCAL_STALE_AFTER_S
    return silent_for > STALE_AFTER_S


class JobQueue:
    def __init__(self, store: Store):
        self.store = store

    def enqueue(self, principle_ids: list[str] | None, requested_by: str, params: dict | None = None) -> dict:
        job = {"id": new_id("job-"), "created": time.time(), "kind": "refine", "status": "queued",
               "principle_ids": json.dumps(principle_ids) if principle_ids else None,
               "params": json.dumps(params or {}), "requested_by": requested_by}
        with atomic(self.store.db):
            self.store.db["jobs"].insert(job)
        return self.get(job["id"])

    def get(self, job_id: str) -> dict | None:
        return self.store._one("SELECT * FROM jobs WHERE id = ?", [job_id])

    def list(self, status: str | None = None, limit: int = 100) -> list[dict]:
        sql, params = "SELECT * FROM jobs", []
        if status:
            sql, params = sql + " WHERE status = ?", [status]
        return [self.store._decode(r) for r in self.store.db.query(sql + " ORDER BY created DESC LIMIT ?", params + [limit])]

    def running(self) -> dict | None:
        return self.store._one("SELECT * FROM jobs WHERE status = 'running' LIMIT 1")

    def recover(self) -> int:
        """Running jobs whose worker is gone go back to the queue (they resume, not restart)."""
        n = 0
        for job in self.store.db.query("SELECT * FROM jobs WHERE status = 'running'"):
            if worker_gone(job):
                with atomic(self.store.db):
                    self.store.db.execute(
                        "UPDATE jobs SET status = 'queued', pid = NULL, host = NULL, error = ? "
                        "WHERE id = ? AND status = 'running' AND heartbeat IS ?",
                        [f"worker {job['pid']} on {job['host']} stopped during {job['stage']}; resuming",
                         job["id"], job["heartbeat"]])
                n += 1
        return n

    def claim(self) -> dict | None:
        """Take the oldest queued job, unless one is running: one job at a time, across processes."""
        self.recover()
        db = self.store.db
        db.execute("BEGIN IMMEDIATE")  # a write lock first, so two workers cannot both claim
        try:
            if db.execute("SELECT 1 FROM jobs WHERE status = 'running'").fetchone():
                db.execute("COMMIT")
                return None
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                db.execute("COMMIT")
                return None
            now = time.time()
            db.execute("UPDATE jobs SET status = 'running', started = COALESCE(started, ?), heartbeat = ?, "
                       "pid = ?, host = ?, attempts = attempts + 1 WHERE id = ?", [now, now, os.getpid(), host_id(), row[0]])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return self.get(row[0])

    def beat(self, job_id: str, stage: str | None = None) -> None:
        with atomic(self.store.db):
            if stage is None:
                self.store.db.execute("UPDATE jobs SET heartbeat = ? WHERE id = ?", [time.time(), job_id])
            else:
                self.store.db.execute("UPDATE jobs SET heartbeat = ?, stage = ? WHERE id = ?", [time.time(), stage, job_id])

    def finish(self, job_id: str, status: str, result: dict | None = None, error: str | None = None) -> None:
        with atomic(self.store.db):
            self.store.db.execute(
                "UPDATE jobs SET status = ?, finished = ?, result = ?, error = ?, pid = NULL, host = NULL WHERE id = ?",
                [status, time.time(), json.dumps(result, default=str) if result is not None else None, error, job_id])


class Heartbeat:
    """Beats a job's heartbeat from a side thread while a long stage runs."""

    def __init__(self, queue: JobQueue, job_id: str, every: float = 10.0):
        self.queue, self.job_id, self.every = queue, job_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        store = Store(self.queue.store.path)  # its own connection, in its own thread
        q = JobQueue(store)
        while not self._stop.wait(self.every):
            try:
                q.beat(self.job_id)
            except Exception:  # a locked database once must not stop the heartbeat for good
                log.warning("heartbeat of %s failed; trying again", self.job_id, exc_info=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def run_worker(settings: Settings, once: bool = False, progress: bool = True) -> list[dict]:
    """Run queued jobs until none is left (or one, with `once`). Returns the finished jobs."""
    from service.refine import refine_job

    store = Store(settings.db_path)
    queue = JobQueue(store)
    done = []
    while True:
        job = queue.claim()
        if job is None:
            break
        log.info("running %s", job["id"])
        try:
            with Heartbeat(queue, job["id"]):
                result = refine_job(settings, store, queue, job, progress=progress)
            queue.finish(job["id"], "succeeded", result)
        except Exception as exc:
            log.exception("job %s failed", job["id"])
            queue.finish(job["id"], "failed", error=f"{type(exc).__name__}: {exc}")
        done.append(queue.get(job["id"]))
        if once:
            break
    return done


class JobScheduler:
    """In the server: starts a worker process when jobs are queued and none is running."""

    def __init__(self, settings: Settings, store: Store):
        self.settings, self.queue = settings, JobQueue(store)
        self.proc: subprocess.Popen | None = None

    def tick(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.queue.recover()
        if self.queue.running() or not self.queue.list("queued", limit=1):
            return
        env = dict(os.environ, REFINERY_DATA_DIR=str(self.settings.data_dir))
        if self.settings.model:
            env["REFINERY_MODEL"] = self.settings.model
        if self.settings.model_cache:
            env["REFINERY_MODEL_CACHE"] = str(self.settings.model_cache)
        log_path = Path(self.settings.data_dir) / "jobs" / "worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "service.cli", "refine", "--worker", "--no-progress"],
                                         env=env, stdout=out, stderr=subprocess.STDOUT)
        log.info("started refinement worker %d (log: %s)", self.proc.pid, log_path)
