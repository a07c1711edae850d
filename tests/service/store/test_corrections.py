"""Corrections in a real SQLite file: what trains (every correction no operator rejected, never a
blank one), how many wait for an adapter to learn them, and the version that learned each."""

from __future__ import annotations

import sqlite3

import pytest

from service.store import Store


def exchange(store: Store, cid: str, question: str, answer: str, created: float, adapter: str | None = None) -> None:
    store.exchanges.start({"id": cid, "created": created, "conversation_id": f"conv-{cid}", "parent_id": None,
                           "messages": [{"role": "user", "content": question}], "status": "running", "model": "m",
                           "adapter_version": adapter, "params": {}, "stream": 0})
    store.exchanges.finish(cid, response=answer, finish_reason="stop", status="ok", prompt_tokens=1,
                           completion_tokens=1, latency_ms=1.0, ttft_ms=1.0)


def feedback(store: Store, fid: str, cid: str, created: float, correction: str | None, thumb: str = "down") -> None:
    _, made = store.feedback.add({"id": fid, "created": created, "completion_id": cid, "conversation_id": f"conv-{cid}",
                                  "thumb": thumb, "correction": correction, "comment": None, "user": "u"})
    assert made


@pytest.fixture()
def store(tmp_path) -> Store:
    s = Store(tmp_path / "refinery.db")
    exchange(s, "c1", "Capital of Australia?", "Sydney.", 1.0, adapter="base@v1")
    exchange(s, "c2", "Legs of a spider?", "Six.", 2.0)
    exchange(s, "c3", "Boiling point of water?", "90 C.", 3.0)
    feedback(s, "f1", "c1", 10.0, "Canberra.")
    feedback(s, "f2", "c2", 20.0, "Eight.")
    feedback(s, "f3", "c3", 30.0, "100 C at sea level.")
    feedback(s, "blank", "c3", 40.0, "   ")  # spaces are no correction
    feedback(s, "none", "c2", 50.0, None, thumb="up")
    return s


def test_rows_carry_the_request_and_answer_newest_first(store):
    rows = store.corrections.list()
    assert [r["id"] for r in rows] == ["f3", "f2", "f1"]
    f1 = store.corrections.get("f1")
    assert f1["messages"] == [{"role": "user", "content": "Capital of Australia?"}]
    assert (f1["response"], f1["correction"], f1["adapter_version"]) == ("Sydney.", "Canberra.", "base@v1")
    assert (f1["status"], f1["distilled_version"]) == ("accepted", None)  # no verdict: it trains
    assert store.corrections.get("blank") is None and store.corrections.get("none") is None
    assert [r["id"] for r in store.corrections.list(limit=1)] == ["f3"]


def test_trainable_excludes_rejected_and_blank_and_waiting_counts(store):
    assert [r["id"] for r in store.corrections.trainable()] == ["f1", "f2", "f3"]  # oldest first
    assert store.corrections.waiting() == 3

    rejected = store.corrections.review("f2", "rejected", "ana", "six is right for insects")
    assert rejected["status"] == "rejected"
    assert [r["id"] for r in store.corrections.trainable()] == ["f1", "f3"]
    assert store.corrections.waiting() == 2
    assert [r["id"] for r in store.corrections.list("rejected")] == ["f2"]
    assert [r["id"] for r in store.corrections.list("accepted")] == ["f3", "f1"]
    [audit] = store.principles.audit("f2")
    assert (audit["actor"], audit["action"], audit["object_type"], audit["reason"]) == (
        "ana", "reject", "correction", "six is right for insects")
    assert (audit["before"], audit["after"]) == ({"status": "accepted"}, {"status": "rejected"})

    # Accepting it again brings it back; an unknown or blank one is no correction to review.
    assert store.corrections.review("f2", "accepted", "bo")["status"] == "accepted"
    assert store.corrections.waiting() == 3
    assert store.corrections.review("blank", "rejected", "ana") is None
    assert store.corrections.review("nope", "rejected", "ana") is None
    with pytest.raises(ValueError):
        store.corrections.review("f1", "pending", "ana")
    assert store.corrections.get("f1")["status"] == "accepted"
    assert [a["action"] for a in store.principles.audit("f2")] == ["accept", "reject"]
    assert store.principles.audit("blank") == [] and store.principles.audit("f1") == []


def test_mark_distilled_records_the_first_version_only(store):
    store.corrections.mark_distilled(["f1", "f3"], "base@v2")
    assert store.corrections.waiting() == 1
    assert store.corrections.get("f1")["distilled_version"] == "base@v2"
    assert store.corrections.get("f2")["distilled_version"] is None
    # A learned correction still trains (the next adapter must keep it); the version that first
    # learned it stays.
    assert [r["id"] for r in store.corrections.trainable()] == ["f1", "f2", "f3"]
    store.corrections.mark_distilled(["f1", "f2"], "base@v3")
    assert store.corrections.get("f1")["distilled_version"] == "base@v2"
    assert store.corrections.get("f2")["distilled_version"] == "base@v3"
    assert store.corrections.waiting() == 0
    # A rejected correction never counts as waiting, even unlearned.
    con = sqlite3.connect(store.path)
    con.execute("UPDATE feedback SET correction_distilled = NULL WHERE id = 'f2'")
    con.commit()
    con.close()
    assert store.corrections.waiting() == 1
    store.corrections.review("f2", "rejected", "ana")
    assert store.corrections.waiting() == 0


def test_the_verdict_survives_reopening_the_file(store):
    store.corrections.review("f1", "rejected", "ana")
    reopened = Store(store.path)
    assert reopened.corrections.get("f1")["status"] == "rejected"
    assert [r["id"] for r in reopened.corrections.trainable()] == ["f2", "f3"]


def test_a_correction_of_newlines_or_tabs_is_blank_too(store):
    feedback(store, "newlines", "c1", 60.0, "\n\t \n")
    assert store.corrections.get("newlines") is None
    assert "newlines" not in [r["id"] for r in store.corrections.trainable()]
