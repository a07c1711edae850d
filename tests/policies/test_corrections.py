"""Which corrections are learned and what each one teaches, on sentences of no benchmark."""

from __future__ import annotations

import numpy as np

from policies.corrections import adopted, key_terms, select


def row(i, request, correction, response="Our answer.", created=None):
    return {"id": f"fb-{i}", "messages": [{"role": "user", "content": request}], "response": response,
            "correction": correction}


def test_key_terms_are_what_the_correction_adds():
    assert key_terms("No, the tallest mountain in Africa is Kilimanjaro.", "It is Mount Kenya.",
                     "What is the tallest mountain in Africa?") == ["kilimanjaro"]
    assert key_terms("The pharmacy closes at 6pm on Sundays.", "It closes at 8pm.",
                     "When does the pharmacy close on Sundays?") == ["6pm"]
    assert key_terms("Same words here.", "Same words here.", "q") == []


def test_adoption_needs_the_terms():
    assert adopted("Kilimanjaro, at 5,895 m.", ["kilimanjaro"]) is True
    assert adopted("Mount Kenya is the tallest.", ["kilimanjaro"]) is False
    assert adopted("anything", []) is None
    assert adopted("red and green", ["red", "green", "blue", "black"]) is True  # half of four
    assert adopted("red only", ["red", "green", "blue"]) is False  # two of three needed


def test_select_keeps_the_latest_correction_of_a_request_and_says_why_others_left():
    rows = [row(1, "Who painted the Night Watch?", "Vermeer."),
            row(2, "who painted the night watch?", "Rembrandt painted it."),  # same request, later: wins
            row(3, "", "Something."),  # no request
            row(4, "How many legs has a spider?", "Our answer."),  # the answer again
            row(5, "How many legs does a spider have?", "Eight.")]
    sel = select(rows)
    assert [r["id"] for r in sel.kept] == ["fb-2", "fb-5"] and sel.kept[0]["request"] == "who painted the night watch?"
    why = {d["id"]: d["why"] for d in sel.dropped}
    assert why == {"fb-1": "a later correction of the same request (fb-2)", "fb-3": "no user request to correct",
                   "fb-4": "the correction is our answer again"}
    assert sel.counts() == {"rows": 5, "used": 2, "dropped": {
        "a later correction of the same request (fb-2)": 1, "no user request to correct": 1,
        "the correction is our answer again": 1}}


def test_select_merges_requests_that_mean_the_same():
    vecs = {"Who painted the Night Watch?": np.array([1.0, 0.0]), "Night Watch: which painter?": np.array([0.96, 0.28]),
            "How far is the Moon?": np.array([0.0, 1.0])}
    sel = select([row(1, "Who painted the Night Watch?", "Vermeer."), row(2, "How far is the Moon?", "384,400 km."),
                  row(3, "Night Watch: which painter?", "Rembrandt.")], embed=vecs.__getitem__)
    assert [r["id"] for r in sel.kept] == ["fb-3", "fb-2"]
