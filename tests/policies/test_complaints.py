"""Complaints (DRIFT), the text side: the conversation that asks for a better answer, the checks a
complaint states, and each verifier passing what addresses the complaint and failing what does not
(the real sentence encoder; a scripted chat model stands in for a remote teacher)."""

from __future__ import annotations

import pytest
from langchain_core.language_models import FakeListChatModel

from policies.complaints import (StructuredFailure, refinement_messages, stated_checks, verify_by_encoder,
                                 verify_by_rules, verify_by_teacher)

ASK = [{"role": "user", "content": "How do I reverse a list in Python?"}]
LONG = ("Reversing a list is something many people want to do. There are several ways, and each has its "
        "own trade-offs, history and performance characteristics, which we will now discuss at length.")


def test_the_model_is_asked_again_with_the_complaint_after_its_answer():
    explicit = refinement_messages(ASK, "Use a loop.", "Too long and vague", natural=False)
    assert explicit[:2] == ASK + [{"role": "assistant", "content": "Use a loop."}]
    assert explicit[-1]["role"] == "user" and explicit[-1]["content"].startswith("My feedback on your answer: Too long and vague")
    assert "again" in explicit[-1]["content"]
    natural = refinement_messages(ASK, "Use a loop.", "that doesn't work", natural=True)
    assert natural[-1]["content"].startswith("that doesn't work")
    assert ASK == [{"role": "user", "content": "How do I reverse a list in Python?"}]  # not changed in place


@pytest.mark.parametrize("complaint, checks", [
    ("Way too long.", ["length"]),
    ("Please keep it under 50 words", ["max_words 50"]),
    ("Answer in French please", ['is_language "fr"']),
    ("That's just wrong.", []),
])
def test_checks_a_complaint_states(complaint, checks):
    assert stated_checks(complaint) == checks


def test_rules_verify_what_the_complaint_asks_for():
    short = verify_by_rules("Too long!", LONG, "Use my_list.reverse() or my_list[::-1].")
    assert short.passed and short.method == "checks"
    longer = verify_by_rules("Too long!", "Use reverse().", LONG)
    assert not longer.passed and "fails" in longer.detail
    more = verify_by_rules("Too short, please elaborate", "Use reverse().", LONG)
    assert more.passed
    assert not verify_by_rules("Too short, please elaborate", LONG, "Use reverse().").passed
    same = verify_by_rules("Too long!", LONG, "  " + LONG + " ")
    assert not same.passed and "our answer again" in same.detail
    assert not verify_by_rules("Too long!", LONG, None).passed
    assert verify_by_rules("That's wrong.", LONG, "Use reversed().") is None  # nothing to check: another judge


def test_the_encoder_passes_a_new_answer_on_the_request_and_fails_the_rest(semantic_models):
    embed = semantic_models.embed_one
    request = ASK[0]["content"]
    ours = "Python is a programming language created by Guido van Rossum in 1991."
    again = "No, I asked how to reverse the order of a list in Python"
    better = "Call my_list.reverse() to reverse it in place, or use my_list[::-1] for a reversed copy."
    ok = verify_by_encoder(again, request, ours, better, embed, repeated=True)
    assert ok.passed and ok.method == "encoder", ok.detail
    paraphrase = verify_by_encoder(again, request, ours, "Python is a programming language made by Guido van Rossum in 1991.",
                                   embed, repeated=True)
    assert not paraphrase.passed and "says what our answer said" in paraphrase.detail
    astray = verify_by_encoder("That's not helpful", request, better, "The weather in Paris is mild in spring.",
                               embed, repeated=False)
    assert not astray.passed and "strays" in astray.detail


def test_the_teacher_judges_and_an_answer_that_never_parses_is_reported():
    yes = FakeListChatModel(responses=['{"addressed": true, "reason": "B gives the method"}'])
    v = verify_by_teacher("Not what I asked", ASK[0]["content"], "Python is old.", "Use reversed().", yes)
    assert (v.passed, v.method, v.detail) == (True, "teacher", "B gives the method")
    retried = FakeListChatModel(responses=["I think so", '```json\n{"addressed": false}\n```'])
    assert not verify_by_teacher("Not what I asked", "q", "a", "b", retried).passed
    never = FakeListChatModel(responses=["maybe", "perhaps", "who knows"])
    with pytest.raises(StructuredFailure) as failure:
        verify_by_teacher("Not what I asked", "q", "a", "b", never)
    assert failure.value.raw == ["maybe", "perhaps", "who knows"]
