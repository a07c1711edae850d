"""Outcomes per version against a real SQLite file: thumbs, negative, correction and
natural-dissatisfaction counts and rates, answer lengths, and the lengths the canary compares."""

from __future__ import annotations

import pytest

from service.store import Store, new_id

V = "refinery@v2"


def answer(store: Store, cid: str, created: float, tokens: int | None, version: str | None = V,
           parent: str | None = None, status: str = "ok") -> str:
    """A request answered by `version` (None: the base model), through the store's own methods."""
    conversation = f"conv-{parent or cid}"
    store.exchanges.start({"id": cid, "created": created, "conversation_id": conversation, "parent_id": parent,
                           "messages": [{"role": "user", "content": f"q {cid}"}], "status": "running", "model": "m",
                           "adapter_version": version, "params": {}, "stream": 0})
    store.exchanges.finish(cid, response=f"a {cid}", finish_reason="stop", status=status, prompt_tokens=3,
                           completion_tokens=tokens, latency_ms=1.0, ttft_ms=1.0)
    return cid


def explicit(store: Store, cid: str, thumb: str | None = None, correction: str | None = None) -> None:
    store.feedback.add({"id": new_id("fb-"), "created": 50.0, "completion_id": cid, "conversation_id": f"conv-{cid}",
                        "thumb": thumb, "correction": correction})


def natural(store: Store, cid: str, follow_up: str, category: str, polarity: str) -> None:
    store.natural.record(follow_up, {"id": new_id("nf-"), "created": 50.0, "completion_id": cid,
                                     "follow_up_id": follow_up, "conversation_id": f"conv-{cid}", "turn": 2,
                                     "user_turn": "no, it's Canberra", "category": category, "polarity": polarity,
                                     "span": "it's Canberra", "principle": 0, "source": "rules", "confidence": 0.9})


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "r.db")
    a1, a2, a3, a4, a5 = (answer(store, f"a{i}", 10.0 + i, 10 * i) for i in range(1, 6))
    f1 = answer(store, "f1", 20.0, 4, parent=a1)
    f2 = answer(store, "f2", 21.0, 4, parent=a2)
    f4 = answer(store, "f4", 22.0, 4, parent=a4)
    f5 = answer(store, "f5", 23.0, 4, parent=a5)
    explicit(store, a1, thumb="down", correction="It's Canberra.")  # a correction with a thumb
    natural(store, a1, f1, "aware_with_correction", "negative")  # and again in the next turn: one request
    natural(store, a2, f2, "aware_with_correction", "negative")  # a correction in the next turn only
    explicit(store, a3, thumb="up", correction="   ")  # a blank correction is none
    natural(store, a4, f4, "repeat_rephrase", "negative")  # dissatisfied, no correction
    natural(store, a5, f5, "positive", "positive")
    explicit(store, a5, correction="Add the date.")  # a correction without a thumb
    answer(store, "b1", 30.0, 100, version=None)
    answer(store, "b2", 31.0, None, version=None)  # no token count
    answer(store, "e1", 32.0, 999, status="error")  # not answered: counts nowhere
    return store


def test_counts_and_rates_per_version(store):
    stats = store.outcomes.per_version()
    assert set(stats) == {V, "base"}
    v = stats[V]
    assert v["requests"] == 9
    assert (v["thumbs_up"], v["thumbs_down"]) == (1, 1)
    assert v["corrections"] == 3  # a1 (explicit and natural, once), a2 (natural), a5 (explicit)
    assert v["natural_negative"] == 3  # a1, a2, a4
    assert v["negative"] == 3  # a1 down and natural negative, a2, a4
    assert v["correction_rate"] == pytest.approx(3 / 9)
    assert v["natural_negative_rate"] == pytest.approx(3 / 9)
    assert v["negative_rate"] == pytest.approx(3 / 9)
    assert v["mean_answer_tokens"] == pytest.approx((10 + 20 + 30 + 40 + 50 + 4 * 4) / 9)
    base = stats["base"]
    assert base["requests"] == 2 and base["corrections"] == 0 and base["correction_rate"] == 0
    assert base["measured_answers"] == 1 and base["mean_answer_tokens"] == 100  # b2 has no count


def test_since_leaves_out_older_requests(store):
    v = store.outcomes.per_version(since=20.0)[V]
    assert v["requests"] == 4  # the follow-ups only; their own answers got no feedback
    assert v["corrections"] == 0 and v["negative"] == 0 and v["mean_answer_tokens"] == 4


def test_answer_lengths_newest_first_capped_and_since(store):
    assert store.outcomes.answer_lengths(V) == [4, 4, 4, 4, 50, 40, 30, 20, 10]
    assert store.outcomes.answer_lengths(V, limit=5) == [4, 4, 4, 4, 50]
    assert store.outcomes.answer_lengths(V, since=13.0) == [4, 4, 4, 4, 50, 40, 30]
    assert store.outcomes.answer_lengths("base") == [100]
    assert store.outcomes.answer_lengths("refinery@v9") == []
