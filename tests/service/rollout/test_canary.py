"""The canary rule beyond thumbs: corrections, natural dissatisfaction and answer length each
roll a canary back on a significant rise, with Bonferroni over the metrics tested, a minimum
rise for length, and no verdict below the minimum sample."""

from __future__ import annotations

import random
import time

import pytest

from service.rollout.canary import LENGTH, judge_canary

N = 400


def outcomes(negative=40, corrections=20, natural_negative=20, requests=N) -> dict:
    return {"requests": requests, "negative": negative, "corrections": corrections, "natural_negative": natural_negative}


def lengths(mean: float, n: int = N, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [max(1, round(rng.gauss(mean, mean / 4))) for _ in range(n)]


def by_metric(verdict) -> dict[str, dict]:
    return {m["metric"]: m for m in verdict.metrics}


def test_more_corrections_with_the_same_thumbs_is_worse_and_named():
    verdict = judge_canary(outcomes(corrections=50), outcomes(corrections=20), 30, 0.05,
                           canary_lengths=lengths(100, seed=1), active_lengths=lengths(100, seed=2))
    assert verdict.worse and verdict.failed == ["corrections"]
    assert "worse on correction rate" in verdict.reason
    checks = by_metric(verdict)
    assert set(checks) == {"negative", "corrections", "natural_negative", LENGTH}
    assert checks["corrections"]["canary"] == pytest.approx(50 / N) and checks["corrections"]["active"] == pytest.approx(20 / N)
    assert checks["corrections"]["p_value"] < 0.05 / 4 and not checks["negative"]["worse"]
    assert f"p = {checks['corrections']['p_value']:.3g}" in verdict.reason  # every metric's p is in the reason
    assert f"p = {checks['negative']['p_value']:.3g}" in verdict.reason


def test_more_natural_dissatisfaction_is_worse():
    verdict = judge_canary(outcomes(natural_negative=55), outcomes(), 30, 0.05)
    assert verdict.worse and "natural_negative" in verdict.failed
    assert "natural-dissatisfaction rate" in verdict.reason


def test_much_longer_answers_are_worse_on_length():
    verdict = judge_canary(outcomes(), outcomes(), 30, 0.05,
                           canary_lengths=lengths(160, seed=1), active_lengths=lengths(100, seed=2))
    assert verdict.worse and verdict.failed == [LENGTH]
    length = by_metric(verdict)[LENGTH]
    assert length["rise"] > 0.5 and length["p_value"] < 1e-6
    assert "worse on mean answer length" in verdict.reason


def test_a_trivial_rise_in_length_over_a_large_sample_is_not_worse():
    verdict = judge_canary(outcomes(requests=5000), outcomes(requests=5000), 30, 0.05,
                           canary_lengths=lengths(105, 5000, seed=1), active_lengths=lengths(100, 5000, seed=2))
    length = by_metric(verdict)[LENGTH]
    assert length["p_value"] < 0.05 / 4  # significant, but only +5 %
    assert 0 < length["rise"] < 0.2 and not verdict.worse


def test_a_canary_that_is_no_different_is_not_worse():
    verdict = judge_canary(outcomes(), outcomes(), 30, 0.05,
                           canary_lengths=lengths(100, seed=1), active_lengths=lengths(100, seed=2))
    assert not verdict.worse and verdict.failed == []
    assert len(verdict.metrics) == 4 and verdict.p_value is not None
    assert "not significantly worse" in verdict.reason


def test_bonferroni_divides_alpha_by_the_metrics_tested():
    # 34 vs 20 corrections of 400: p is about 0.025, below 0.05 but above 0.05 / 3.
    canary, active = outcomes(corrections=34), outcomes()
    three = judge_canary(canary, active, 30, 0.05)
    p = by_metric(three)["corrections"]["p_value"]
    assert 0.05 / 3 < p < 0.05
    assert not three.worse and all(m["alpha"] == pytest.approx(0.05 / 3) for m in three.metrics)
    alone = judge_canary({"requests": N, "corrections": 34}, {"requests": N, "corrections": 20}, 30, 0.05)
    assert alone.worse and alone.metrics[0]["alpha"] == 0.05  # one metric: no correction


def test_below_min_samples_waits():
    few = judge_canary(outcomes(requests=20, corrections=19), outcomes(), 30, 0.05,
                       canary_lengths=lengths(500, 20), active_lengths=lengths(100))
    assert not few.worse and few.p_value is None and few.metrics == []
    assert "waiting for 30 requests" in few.reason
    # Enough requests but too few measured lengths: length is not tested, the rates are.
    short = judge_canary(outcomes(), outcomes(), 30, 0.05, canary_lengths=lengths(500, 10), active_lengths=lengths(100))
    assert LENGTH not in by_metric(short) and len(short.metrics) == 3 and not short.worse


def test_judged_from_the_store(tmp_path):
    """The store's outcomes and lengths feed the rule: a canary whose answers are twice as long
    and corrected more is worse on both, while an old, bad history before `since` is ignored."""
    from service.store import Store, new_id

    store = Store(tmp_path / "r.db")
    rng = random.Random(0)

    def add(version, created, tokens, corrected):
        cid = new_id("chatcmpl-")
        store.exchanges.start({"id": cid, "created": created, "conversation_id": cid, "parent_id": None,
                               "messages": [{"role": "user", "content": "q"}], "status": "running", "model": "m",
                               "adapter_version": version, "params": {}, "stream": 0})
        store.exchanges.finish(cid, response="a", finish_reason="stop", status="ok", prompt_tokens=1,
                               completion_tokens=tokens, latency_ms=1.0, ttft_ms=1.0)
        if corrected:
            store.feedback.add({"id": new_id("fb-"), "created": created, "completion_id": cid,
                                "conversation_id": cid, "correction": "better"})

    for i in range(60):
        add("v1", 1.0, 500, True)  # before the canary started
        add("v1", 10.0 + i, rng.randint(40, 60), i < 3)
        add("v2", 10.0 + i, rng.randint(90, 110), i < 20)
    stats = store.outcomes.per_version(since=5.0)
    verdict = judge_canary(stats["v2"], stats["v1"], 30, 0.05,
                           canary_lengths=store.outcomes.answer_lengths("v2", since=5.0),
                           active_lengths=store.outcomes.answer_lengths("v1", since=5.0))
    assert set(verdict.failed) == {"corrections", LENGTH}
    assert by_metric(verdict)[LENGTH]["active_n"] == 60


def test_server_rolls_back_a_canary_corrected_more_and_the_api_shows_why(tmp_path, tiny_model_dir, model_cache):
    """Through the running server: the list shows the canary's per-metric check, and the periodic
    check rolls back a canary whose thumbs match the active version's but whose answers are
    corrected (and longer) far more often."""
    from service.store import new_id
    from tests.fixtures.app import wait_healthy
    from tests.fixtures.models import make_lora
    from tests.service.rollout.test_serving_versions import ADMIN, make_client, register

    with make_client(tmp_path / "data", tiny_model_dir, model_cache) as client:
        wait_healthy(client)
        v1 = register(client, make_lora(tiny_model_dir, tmp_path / "a", 1))
        v2 = register(client, make_lora(tiny_model_dir, tmp_path / "b", 2))
        client.post(f"/admin/adapters/{v1}/promote", headers=ADMIN)
        client.post(f"/admin/adapters/{v2}/canary", json={"share": 0.5}, headers=ADMIN)
        store, now = client.app.state.store, time.time() + 1
        with store.atomic():
            for version, tokens, corrected in ((v1, 20, 2), (v2, 60, 20)):
                for i in range(40):
                    cid = new_id("chatcmpl-")
                    store.db["conversations"].insert({"id": cid, "created": now}, ignore=True)
                    store.db["completions"].insert({
                        "id": cid, "created": now, "conversation_id": cid, "messages": "[]", "response": "x",
                        "status": "ok", "model": version, "adapter_version": version, "params": "{}", "stream": 0,
                        "completion_tokens": tokens + i % 5})
                    store.db["feedback"].insert({"id": new_id("fb-"), "created": now, "completion_id": cid,
                                                 "conversation_id": cid, "thumb": "down" if i < 4 else "up",
                                                 "correction": "better" if i < corrected else None})
        listed = {a["id"]: a for a in client.get("/admin/adapters", headers=ADMIN).json()["data"]}
        check = listed[v2]["canary_check"]
        assert check["worse"] and set(check["failed"]) == {"corrections", LENGTH}
        assert {m["metric"] for m in check["metrics"]} == {"negative", "corrections", "natural_negative", LENGTH}
        assert listed[v1]["canary_check"] is None
        assert listed[v2]["outcomes"]["correction_rate"] == 0.5 and listed[v2]["outcomes"]["thumbs_down"] == 4
        actions = client.app.state.rollout.check_canaries()
        assert len(actions) == 1 and actions[0].startswith(f"rolled back {v2}") and "correction rate" in actions[0]
        assert client.app.state.rollout.registry.get(v2).status == "rejected"
        metrics = client.get("/metrics").text
        assert f'refinery_version_correction_rate{{version="{v2}"}} 0.5' in metrics
        assert f'refinery_version_mean_answer_tokens{{version="{v1}"}} 22.0' in metrics
