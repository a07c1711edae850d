"""The refinement worker: the job queue's rules (one job at a time, resumable after a crash), the
heartbeat, the worker loop, and the server's scheduler that starts a worker process.

A job runs in its own process (`refinery refine --worker`, started by the server's scheduler
or by cron/systemd/Kubernetes), never inside the serving process: training takes the CPU for
minutes, and a crash in it must not take the server down. The worker claims the oldest queued
job in one transaction, beats a heartbeat while it works, and keeps each stage's output on
disk, so a job whose worker died is put back in the queue and resumes after its last finished
stage.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from adapters.runtime import pid_alive
from service.distill.job import refine_job
from service.settings import Settings
from service.store import Store

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


def worker_gone(job: dict, now: float | None = None) -> bool:
    """Has the worker of this running job stopped? Its pid decides on its own machine, its
    heartbeat elsewhere (a cron pod's pid means nothing to the server's pod)."""
    now = now or time.time()
    silent_for = now - (job.get("heartbeat") or 0)
    if job.get("host") == host_id():
        return not pid_alive(job.get("pid")) or silent_for > LOCAL_STALE_AFTER_S
    return silent_for > STALE_AFTER_S


class JobQueue:
    """The queue's rules over the store's jobs table (service.store.jobs)."""

    def __init__(self, store: Store):
        self.store = store
        self.jobs = store.jobs

    def enqueue(self, principle_ids: list[str] | None, requested_by: str, params: dict | None = None) -> dict:
        return self.jobs.enqueue(principle_ids, requested_by, params)

    def get(self, job_id: str) -> dict | None:
        return self.jobs.get(job_id)

    def list(self, status: str | None = None, limit: int = 100) -> list[dict]:
        return self.jobs.list(status, limit)

    def running(self) -> dict | None:
        return self.jobs.running()

    def recover(self) -> int:
        """Running jobs whose worker is gone go back to the queue (they resume, not restart)."""
        n = 0
        for job in self.jobs.all_running():
            if worker_gone(job):
                self.jobs.requeue(job, f"worker {job['pid']} on {job['host']} stopped during {job['stage']}; resuming")
                n += 1
        return n

    def claim(self) -> dict | None:
        """Take the oldest queued job, unless one is running: one job at a time, across processes."""
        self.recover()
        return self.jobs.claim(os.getpid(), host_id())

    def beat(self, job_id: str, stage: str | None = None) -> None:
        self.jobs.beat(job_id, stage)

    def finish(self, job_id: str, status: str, result: dict | None = None, error: str | None = None) -> None:
        self.jobs.finish(job_id, status, result, error)


class Heartbeat:
    """Beats a job's heartbeat from a side thread while a long stage runs."""

    def __init__(self, store: Store, job_id: str, every: float = 10.0):
        self.path, self.job_id, self.every = store.path, job_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        store = Store(self.path)  # its own connection, in its own thread
        while not self._stop.wait(self.every):
            try:
                store.jobs.beat(self.job_id)
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
    store = Store(settings.db_path)
    queue = JobQueue(store)
    done = []
    while True:
        job = queue.claim()
        if job is None:
            break
        log.info("running %s", job["id"])
        try:
            with Heartbeat(store, job["id"]):
                result = refine_job(settings, store, job, beat=lambda stage, jid=job["id"]: queue.beat(jid, stage),
                                    progress=progress)
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
