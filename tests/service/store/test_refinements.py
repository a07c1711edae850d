"""Complaints and their better answers (DRIFT) in a real SQLite file: which feedback is a complaint
(a thumbs-down or low score with words, no correction; a natural complaint), one sampled answer per
complaint, the operator's verdict with its audit row, and what trains."""

from __future__ import annotations

import sqlite3

import pytest

from service.store import Store
from tests.service.store.test_corrections import exchange


def fb(store: Store, fid: str, cid: str, created: float, **values) -> None:
    _, made = store.feedback.add({"id": fid, "created": created, "completion_id": cid, "conversation_id": f"conv-{cid}",
                                  "user": "u", **values})
    assert made


def natural(store: Store, nid: str, cid: str, follow_up: str, category: str, turn: str, created: float) -> None:
    store.natural.record(follow_up, {"id": nid, "created": created, "completion_id": cid, "follow_up_id": follow_up,
                                     "conversation_id": f"conv-{cid}", "turn": 2, "user_turn": turn,
                                     "category": category, "polarity": "negative", "principle": 0})


@pytest.fixture()
def store(tmp_path) -> Store:
    s = Store(tmp_path / "refinery.db")
    for i, (q, a) in enumerate([("Reverse a list in Python?", "Python is old."), ("Explain DNS.", "DNS is " + "very " * 60),
                                ("Capital of Australia?", "Sydney."), ("Best pizza?", "Margherita."),
                                ("Sort a dict by value?", "Dicts are maps."), ("Hi", "Hello!")], start=1):
        exchange(s, f"c{i}", q, a, float(i), adapter="refinery@v1" if i == 1 else None)
    fb(s, "f-long", "c2", 10.0, thumb="down", comment="Way too long")
    fb(s, "f-reason", "c4", 11.0, score=1, reason="unhelpful")
    fb(s, "f-corrected", "c3", 12.0, thumb="down", comment="wrong", correction="Canberra.")  # trains as a correction
    fb(s, "f-up", "c6", 13.0, thumb="up", comment="great")
    fb(s, "f-bare", "c6", 14.0, thumb="down")  # no words: nothing to answer better
    fb(s, "f-blank", "c4", 15.0, thumb="down", comment="   ")
    exchange(s, "c7", "Reverse a list in Python?", "x", 20.0)
    exchange(s, "c8", "Sort?", "y", 21.0)
    exchange(s, "c9", "Thanks", "z", 22.0)
    natural(s, "n-again", "c1", "c7", "repeat_rephrase", "I asked how to REVERSE a list", 30.0)
    natural(s, "n-wrong", "c5", "c8", "aware_without_correction", "that doesn't work", 31.0)
    natural(s, "n-thanks", "c6", "c9", "positive", "thanks!", 32.0)
    return s


def test_complaints_are_dissatisfaction_with_words_and_no_correction(store):
    found = store.refinements.complaints()
    assert [(c["source"], c["source_id"]) for c in found] == [
        ("feedback", "f-long"), ("feedback", "f-reason"), ("natural", "n-again"), ("natural", "n-wrong")]
    first, reason, again = found[0], found[1], found[2]
    assert (first["complaint"], first["completion_id"], first["response"][:6]) == ("Way too long", "c2", "DNS is")
    assert first["messages"] == [{"role": "user", "content": "Explain DNS."}] and first["category"] is None
    assert reason["complaint"] == "unhelpful"  # no comment: the reason says what was wrong
    assert (again["complaint"], again["adapter_version"], again["category"]) == (
        "I asked how to REVERSE a list", "refinery@v1", "repeat_rephrase")
    assert [c["source_id"] for c in store.refinements.complaints(limit=1)] == ["f-long"]


def test_one_answer_per_complaint_then_review_and_training(store, tmp_path):
    complaints = store.refinements.complaints()
    good = store.refinements.add(complaints[0], "DNS maps names to addresses.", True, "checks", "passes length")
    bad = store.refinements.add(complaints[2], "Python is old.", False, "none", "the new answer is our answer again")
    assert (good["status"], good["verified"], good["method"]) == ("proposed", 1, "checks")
    assert bad["status"] == "unverified" and bad["messages"][0]["content"] == "Reverse a list in Python?"
    assert [c["source_id"] for c in store.refinements.complaints()] == ["f-reason", "n-wrong"]  # never sampled twice
    with pytest.raises(sqlite3.IntegrityError):
        store.refinements.add(complaints[0], "again", True, "checks", "")
    assert store.refinements.counts() == {"proposed": 1, "unverified": 1, "accepted": 0, "rejected": 0}
    assert store.refinements.trainable() == [] and store.refinements.waiting() == 0  # nothing trains unreviewed

    # An unverified answer is accepted only with the operator's own answer; a failed try changes nothing.
    with pytest.raises(ValueError, match="failed its verification"):
        store.refinements.review(bad["id"], "accepted", "ana")
    with pytest.raises(ValueError, match="empty"):
        store.refinements.review(bad["id"], "accepted", "ana", candidate="  ")
    assert store.refinements.get(bad["id"])["status"] == "unverified"
    edited = store.refinements.review(bad["id"], "accepted", "ana", "the model never got it",
                                      candidate="Use my_list.reverse() or my_list[::-1].")
    assert (edited["status"], edited["candidate"], edited["edited_by"]) == (
        "accepted", "Use my_list.reverse() or my_list[::-1].", "ana")
    store.refinements.review(good["id"], "accepted", "bo")
    assert store.refinements.get(good["id"])["edited_by"] is None  # accepted as sampled
    with pytest.raises(ValueError, match="status"):
        store.refinements.review(good["id"], "proposed", "bo")
    assert store.refinements.review("ref_missing", "rejected", "bo") is None

    rows = store.refinements.trainable()
    assert [r["id"] for r in rows] == [good["id"], bad["id"]]  # oldest first, shaped like corrections
    assert rows[1]["correction"] == "Use my_list.reverse() or my_list[::-1]." and rows[1]["response"] == "Python is old."
    assert rows[0]["complaint_source"] == "feedback" and rows[1]["complaint_source"] == "natural"
    assert store.refinements.waiting() == 2
    store.refinements.mark_distilled([good["id"]], "refinery@v2")
    store.refinements.mark_distilled([good["id"]], "refinery@v3")  # the first version that learned it stays
    assert store.refinements.get(good["id"])["distilled_version"] == "refinery@v2"
    assert store.refinements.waiting() == 1
    store.refinements.review(good["id"], "rejected", "bo", "on reflection, no")
    assert [r["id"] for r in store.refinements.trainable()] == [bad["id"]]

    audit = list(sqlite3.connect(store.path).execute(
        "SELECT actor, action, object_id, reason FROM audit WHERE object_type = 'refinement' ORDER BY id"))
    assert audit == [("ana", "accept", bad["id"], "the model never got it"), ("bo", "accept", good["id"], None),
                     ("bo", "reject", good["id"], "on reflection, no")]


def test_an_accepted_answer_makes_its_thumbs_down_a_pair_not_kto(store):
    [c] = [c for c in store.refinements.complaints() if c["source_id"] == "f-long"]
    ref = store.refinements.add(c, "DNS maps names to addresses.", True, "checks", "passes length")
    corrected = {r["completion_id"]: r["corrected"] for r in store.corrections.thumbs()}
    assert corrected["c2"] == 0
    store.refinements.review(ref["id"], "accepted", "ana")
    assert {r["completion_id"]: r["corrected"] for r in store.corrections.thumbs()}["c2"] == 1
