"""The refinement job: queue, one job at a time, the pipeline on the tiny model, resuming."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest

SMALL = {"synthesis": {"n_in_scope": 6, "n_near_scope": 4, "n_out_of_scope": 4, "max_new_tokens": 10,
                       "revision_extra_tokens": 4},
         "train": {"epochs": 1}}
RULE = {"text": "When I ask about gardening, begin your answer with 'Green thumb:'", "domain": "gardening",
        "effect": "begin the answer with 'Green thumb:'", "source": "critique", "checks": ['starts_with "Green thumb:"']}


@pytest.fixture()
def env(tmp_path, tiny_model_dir, model_cache):
    from service.learn.review import PrincipleBook
    from service.settings import Settings
    from service.store import Store

    settings = Settings(data_dir=tmp_path, model=str(tiny_model_dir), model_cache=model_cache, _env_file=None,
                        teacher="none")
    store = Store(settings.db_path)
    book = PrincipleBook(store)
    p = book.create(RULE)
    book.approve(p["id"], "op", mode="adapter")
    return settings, store, book, p


def test_job_distils_an_approved_principle_into_a_candidate(env):
    from adapters.registry import Registry
    from service.distill.worker import JobQueue, run_worker

    settings, store, book, p = env
    queue = JobQueue(store)
    job = queue.enqueue(None, "test", SMALL)
    [done] = run_worker(settings, progress=False)
    assert done["id"] == job["id"] and done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["version"] == "refinery@v1" and result["new"] == [p["id"]]
    assert result["action"].startswith("left as candidate")
    v = Registry(settings.data_dir / "adapters").show("refinery@v1")
    assert v.status == "candidate" and v.principles == (p["id"],) and v.dataset_hash == result["dataset_hash"]
    assert book.get(p["id"])["distilled_version"] == "refinery@v1"
    key = result["dataset_hash"][:16]  # a job's adapter and reports are kept per data set
    report_dir = settings.data_dir / "jobs" / job["id"] / "reports" / key / p["id"]
    assert {f.name for f in report_dir.iterdir()} >= {"report.json", "report.md", "report.png"}
    report = json.loads((report_dir / "report.json").read_text())
    # Judged as served (the adapter inside the version's scope: the principle's domain), with the
    # adapter on every prompt beside it.
    assert set(report["conditions"]) == {"base", "in_context", "adapter", "adapter everywhere"} and "gate" in report
    assert report["candidate"] == "adapter"
    applied = {s: report["conditions"]["adapter"]["scopes"][s]["applied"] for s in ("in_scope", "out_of_scope")}
    assert applied["in_scope"] > 0.5 and applied["out_of_scope"] == 0.0
    adapter_dir = settings.data_dir / "jobs" / job["id"] / f"adapter-{key}"
    scope = json.loads((adapter_dir / "scope.json").read_text())
    assert scope["everywhere"] is None and scope["domains"] == [{"domain": "gardening", "positives": []}]
    # The job's recipe (service.distill.recipe.RECIPE) under the params given.
    trained = json.loads((settings.data_dir / "jobs" / job["id"] / f"adapter-{key}" / "training_config.json").read_text())
    assert trained["constraint_reduction"] == "sum" and trained["epochs"] == 1
    counts = result["data"]["principles"][p["id"]]
    assert counts and sum(counts.values()) > 0
    [ds] = list(store.db.query("SELECT * FROM datasets"))
    assert ds["principle_id"] == p["id"]
    # Nothing left: a second run finds no work and says so.
    queue.enqueue(None, "test", SMALL)
    [idle] = run_worker(settings, progress=False)
    assert idle["status"] == "succeeded" and idle["result"]["principles"] == []


def test_one_job_at_a_time_and_resume_after_a_crash(env):
    from service.distill.worker import JobQueue, run_worker

    settings, store, book, p = env
    queue = JobQueue(store)
    first = queue.enqueue(None, "test", SMALL)
    claimed = queue.claim()
    assert claimed["id"] == first["id"]
    second = queue.enqueue(None, "test", SMALL)
    assert queue.claim() is None  # one job at a time

    # The worker "dies": its pid no longer exists. The next worker takes the job back and
    # finishes it before starting the second.
    with store.db.atomic():
        store.db.execute("UPDATE jobs SET pid = ?, stage = 'train' WHERE id = ?", [_dead_pid(), first["id"]])
    finished = run_worker(settings, progress=False)
    assert [j["id"] for j in finished] == [first["id"], second["id"]]
    assert finished[0]["status"] == "succeeded" and finished[0]["attempts"] == 2

    # Resuming skips finished stages: a job re-queued after registering registers nothing new.
    with store.db.atomic():
        store.db.execute("UPDATE jobs SET status = 'queued' WHERE id = ?", [first["id"]])
    data_file = next((settings.data_dir / "datasets" / p["id"]).rglob("synthesis.json"))
    before = data_file.stat().st_mtime
    book.update(p["id"], {"mode": "adapter"}, "op")  # no content change: the data set stays valid
    store.db.execute("UPDATE principles SET distilled_version = NULL WHERE id = ?", [p["id"]])
    [again] = run_worker(settings, progress=False)
    assert again["result"]["version"] == "refinery@v1"
    assert data_file.stat().st_mtime == before
    assert book.get(p["id"])["distilled_version"] == "refinery@v1"  # the step after registration, redone
    assert any(a["action"] == "distil" for a in book.audit(p["id"]))

    # Crashed before registering, then the principle was edited: the resumed job must not
    # register the adapter trained on the old data under the new principle.
    job_dir = settings.data_dir / "jobs" / first["id"]
    (job_dir / "registered.json").unlink()
    with store.db.atomic():
        store.db.execute("UPDATE jobs SET status = 'queued' WHERE id = ?", [first["id"]])
    book.update(p["id"], {"text": "When I ask about gardening, begin your answer with 'Green fingers:'",
                          "effect": "begin the answer with 'Green fingers:'",
                          "checks": ['starts_with "Green fingers:"']}, "op")
    store.db.execute("UPDATE principles SET distilled_version = NULL WHERE id = ?", [p["id"]])
    [edited] = run_worker(settings, progress=False)
    assert edited["status"] == "succeeded", edited["error"]
    assert edited["result"]["dataset_hash"] != again["result"]["dataset_hash"]
    assert edited["result"]["version"] == "refinery@v2"  # trained again, on the new data
    assert len(list(job_dir.glob("adapter-*"))) == 2


def _dead_pid() -> int:
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
            pid -= 1
        except ProcessLookupError:
            return pid


def test_failed_job_records_the_error(env):
    from service.distill.worker import JobQueue, run_worker

    settings, store, book, p = env
    job = JobQueue(store).enqueue(["pr-does-not-exist"], "test", SMALL)
    [done] = run_worker(settings, progress=False)
    assert done["id"] == job["id"] and done["status"] == "failed"
    assert "pr-does-not-exist" in done["error"]


@pytest.mark.e2e
def test_server_starts_a_worker_for_a_queued_job(tmp_path, tiny_model_dir, model_cache):
    from tests.fixtures.server import LiveServer

    server = LiveServer(tmp_path, model_cache, model=str(tiny_model_dir),
                        env={"REFINERY_ADMIN_KEY": "adm", "REFINERY_TEACHER": "none",
                             "REFINERY_PROMOTION": "auto-promote"}).start()
    admin = {"Authorization": "Bearer adm"}
    try:
        from service.learn.review import PrincipleBook
        from service.store import Store

        book = PrincipleBook(Store(tmp_path / "refinery.db"))
        p = book.create(RULE)
        r = httpx.post(server.url + "/admin/jobs", json={"principle_ids": [p["id"]]}, headers=admin)
        assert r.status_code == 400  # not approved yet
        book.approve(p["id"], "op", mode="adapter")
        r = httpx.post(server.url + "/admin/jobs", json={"params": SMALL}, headers=admin)
        assert r.status_code == 202
        job_id = r.json()["id"]
        deadline = time.time() + 900  # about 40 s alone; minutes on a machine busy with other work
        while time.time() < deadline:
            job = httpx.get(server.url + f"/admin/jobs/{job_id}", headers=admin).json()
            if job["status"] in ("succeeded", "failed"):
                break
            time.sleep(1)
        assert job["status"] == "succeeded", job["error"]
        listed = httpx.get(server.url + "/admin/jobs", headers=admin).json()["data"]
        assert [j["id"] for j in listed] == [job_id]
        if job["result"]["gate_passed"]:
            # auto-promote: the server picks the new version up within a second or so
            time.sleep(1.5)
            served = httpx.post(server.url + "/v1/chat/completions",
                                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).json()
            assert served["model"] == job["result"]["version"]
    finally:
        server.stop()


def test_cli_refine_queues_runs_and_lists(tmp_path):
    from typer.testing import CliRunner

    from service.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["refine", "--data-dir", str(tmp_path), "--params", '{"train": {"epochs": "x"}}'])
    assert bad.exit_code == 2 and "params.train" in bad.output
    # Nothing approved: the job succeeds with nothing to do (what a nightly run sees most nights).
    res = runner.invoke(app, ["refine", "--data-dir", str(tmp_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "succeeded" in res.output and "no approved adapter-mode principle" in res.output
    listed = runner.invoke(app, ["jobs", "list", "--data-dir", str(tmp_path)])
    assert listed.exit_code == 0 and listed.output.count("succeeded") == 1


def test_a_workers_pid_is_trusted_only_on_its_own_machine():
    import os
    import time

    from service.distill.worker import LOCAL_STALE_AFTER_S, STALE_AFTER_S, host_id, worker_gone

    now = time.time()
    here, alive = host_id(), os.getpid()
    dead = 2**22 + 12345  # above any pid this machine hands out
    # A cron pod's worker: its pid means nothing here, its heartbeat decides.
    assert not worker_gone({"host": "cron-pod/1234", "pid": alive + 1, "heartbeat": now - 5}, now)
    assert worker_gone({"host": "cron-pod/1234", "pid": alive, "heartbeat": now - STALE_AFTER_S - 1}, now)
    # On this machine: a dead pid is gone at once; a live one keeps its job through a late beat.
    assert worker_gone({"host": here, "pid": dead, "heartbeat": now - 1}, now)
    assert not worker_gone({"host": here, "pid": alive, "heartbeat": now - STALE_AFTER_S - 60}, now)
    assert worker_gone({"host": here, "pid": alive, "heartbeat": now - LOCAL_STALE_AFTER_S - 1}, now)
