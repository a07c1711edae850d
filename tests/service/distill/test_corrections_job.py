"""Corrections in the refinement job, on the tiny model: pairs from corrections (a rejected one
never trains, a repeated one is merged), anchors from the corpus, a corrections report the gate
reads, and the corrections marked with the version that learned them."""

from __future__ import annotations

import json

import pytest

from service.store import new_id

SMALL = {"synthesis": {"n_out_of_scope": 6, "max_new_tokens": 8}, "train": {"epochs": 1}}


def corrected(store, i, request, response, correction, thumb="down"):
    cid = f"cmpl-{i}"
    store.exchanges.start({"id": cid, "created": float(i), "conversation_id": f"conv-{i}", "parent_id": None,
                           "messages": [{"role": "user", "content": request}], "status": "running", "model": "m",
                           "adapter_version": None, "params": {}, "stream": 0})
    store.exchanges.finish(cid, response=response, finish_reason="stop", status="ok", prompt_tokens=3,
                           completion_tokens=5, latency_ms=1.0, ttft_ms=1.0)
    fid = new_id("fb-")
    store.feedback.add({"id": fid, "created": 100.0 + i, "completion_id": cid, "conversation_id": f"conv-{i}",
                        "thumb": thumb, "correction": correction})
    return fid


@pytest.fixture()
def env(tmp_path, tiny_model_dir, model_cache, semantic_models):
    from service.settings import Settings
    from service.store import Store

    settings = Settings(data_dir=tmp_path, model=str(tiny_model_dir), model_cache=model_cache, _env_file=None,
                        teacher="none")
    return settings, Store(settings.db_path)


def test_job_learns_corrections_and_never_a_rejected_one(env):
    from service.distill.worker import JobQueue, run_worker

    settings, store = env
    canberra = corrected(store, 1, "What is the capital of Australia?", "Sydney.", "The capital of Australia is Canberra.")
    old = corrected(store, 2, "When does Riverside Dental open on Saturdays?", "At 10am.", "At 8am.")
    newer = corrected(store, 3, "When does Riverside Dental open on Saturdays?", "At 10am.", "We open at 9am on Saturdays.")
    bad = corrected(store, 4, "Who wrote Hamlet?", "Shakespeare.", "Christopher Marlowe wrote it.")
    store.corrections.review(bad, "rejected", "ana", "Hamlet is Shakespeare's")
    assert store.corrections.waiting() == 3
    corrected(store, 5, "Tell me a joke.", "Why did the chicken cross the road?", None, thumb="up")
    corrected(store, 6, "Summarise this.", "", None, thumb="down")  # nothing was answered

    JobQueue(store).enqueue(None, "test", SMALL)
    [done] = run_worker(settings, progress=False)
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert sorted(result["corrections"]) == sorted([canberra, newer])
    counts = result["data"]["corrections"]
    assert counts["used"] == 2 and counts["pairs"] == 2 and counts["out_rows"] > 0 and counts["near_rows"] > 0
    assert counts["dropped"] == {f"a later correction of the same request ({newer})": 1}
    # Thumbs without a pair train with KTO: the joke's thumbs-up and the Hamlet answer's
    # thumbs-down (its correction was rejected, not the thumb); the corrected ones are pairs.
    thumbs = result["data"]["thumbs"]
    assert (thumbs["used"], thumbs["up"], thumbs["down"]) == (2, 1, 1)
    assert thumbs["dropped"] == {"the request also got a correction or an accepted better answer (trained as its pair)": 3, "empty answer": 1}

    work = settings.data_dir / "jobs" / done["id"]
    curve = json.loads(next(work.glob("adapter-*/loss_curve.json")).read_text())
    assert curve["summary"]["unpaired"] == 2 and any(curve["steps"]["kto"])
    data = json.loads((work / "corrections.json").read_text())
    chosen = {p["chosen"] for p in data["pairs"]}
    assert chosen == {"The capital of Australia is Canberra.", "We open at 9am on Saturdays."}  # never Marlowe
    assert {p["rejected"] for p in data["pairs"]} == {"Sydney.", "At 10am."}
    [report_md] = list(work.glob("reports/*/corrections/report.md"))
    report = json.loads((report_md.parent / "report.json").read_text())
    assert {r["terms"][0] for r in report["corrections"]} == {"canberra", "9am"}
    assert report["scopes"]["out_of_scope"]["n"] > 0 and report["gate"]["reasons"]
    # The version's scope: the requests it learned from (corrections and thumbs), kept beside the
    # adapter through registration; the corpus's unrelated requests are answered by the base
    # weights, so as served they are the base model's, whatever the adapter alone does.
    from adapters.registry import Registry

    scope = json.loads((Registry(settings.data_dir / "adapters").show(result["version"]).path / "scope.json").read_text())
    assert scope["everywhere"] is None
    assert set(scope["requests"]) == {"What is the capital of Australia?", "When does Riverside Dental open on Saturdays?",
                                      "Tell me a joke.", "Who wrote Hamlet?"}
    out = report["scopes"]["out_of_scope"]
    assert out["adapter_applied"] == 0.0 and out["identical"] == 1.0 and out["identical_adapter"] is not None
    assert report["scope"]["requests"] == scope["requests"]
    assert "with the adapter on every one" in report_md.read_text()
    # A random tiny model adopts nothing: the gate says so, and the version stays a candidate.
    assert not report["gate"]["passed"] and not result["gate_passed"]
    assert any(r.startswith("fail: corrections adopted") for r in report["gate"]["reasons"])

    assert store.corrections.waiting() == 0
    learned = {r["id"]: r["distilled_version"] for r in store.corrections.list()}
    assert learned[canberra] == learned[newer] == result["version"] and learned[bad] is None
    JobQueue(store).enqueue(None, "test", SMALL)
    [idle] = run_worker(settings, progress=False)
    assert idle["result"]["principles"] == [] and "no correction" in idle["result"]["note"]


def test_accepted_answers_to_complaints_train_as_pairs_and_unreviewed_ones_do_not(env):
    """DRIFT: a complaint's better answer trains only once an operator accepted it, as a pair of
    source "complaint" anchored like corrections; the report counts it apart from corrections."""
    from service.distill.worker import JobQueue, run_worker

    settings, store = env
    fid = corrected(store, 1, "Explain how DNS works.", "DNS is " + "a system " * 30, None)
    store.execute("UPDATE feedback SET comment = 'Way too long' WHERE id = ?", [fid])
    other = corrected(store, 2, "What is a black hole?", "A hole.", None)
    store.execute("UPDATE feedback SET comment = 'Not helpful' WHERE id = ?", [other])
    c_dns, c_hole = store.refinements.complaints()
    accepted = store.refinements.add(c_dns, "DNS turns names like example.com into IP addresses.", True, "checks",
                                     "passes length")
    waiting = store.refinements.add(c_hole, "A region whose gravity traps light.", True, "encoder", "says something else")
    JobQueue(store).enqueue(None, "test", SMALL)
    [idle] = run_worker(settings, progress=False)  # nothing reviewed yet: nothing to learn
    assert idle["result"]["principles"] == [] and "accepted complaint answer" in idle["result"]["note"]

    store.refinements.review(accepted["id"], "accepted", "ana")
    JobQueue(store).enqueue(None, "test", SMALL)
    [done] = run_worker(settings, progress=False)
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["complaints"] == [accepted["id"]] and result["corrections"] == []
    counts = result["data"]["complaints"]
    assert counts["used"] == 1 and counts["pairs"] == 1 and counts["out_rows"] > 0
    assert counts["review"] == {"proposed": 1, "unverified": 0, "accepted": 1, "rejected": 0}
    assert result["data"]["corrections"]["used"] == 0
    # Its thumbs-down trains as the pair, not again as an undesirable KTO answer; the other one does.
    assert result["data"]["thumbs"]["down"] == 1
    data = json.loads((settings.data_dir / "jobs" / done["id"] / "corrections.json").read_text())
    [pair] = data["pairs"]
    assert (pair["source"], pair["chosen"], pair["rejected"]) == (
        "complaint", "DNS turns names like example.com into IP addresses.", "DNS is " + "a system " * 30)
    [report_md] = list((settings.data_dir / "jobs" / done["id"]).glob("reports/*/corrections/report.md"))
    assert "| complaint | Explain how DNS works." in report_md.read_text()
    assert store.refinements.get(accepted["id"])["distilled_version"] == result["version"]
    assert store.refinements.get(waiting["id"])["distilled_version"] is None and store.refinements.waiting() == 0
