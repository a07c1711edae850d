"""Natural-feedback detection: rule cues per category, reformulation, the LLM layer with
scripted fake chat models. No model is loaded here.

The phrasings below are not the bench sentences (bench/data/natural_labelled.jsonl): the
bench measures generalisation, these tests pin behaviour.
"""

from __future__ import annotations

import json

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage

from policies.natural import (
    NaturalFeedback,
    RuleConfig,
    classify_messages,
    detect_conversation,
    detect_rules,
    detect_turn,
    feedback_turns,
    similarity,
    verbatim_span,
)
from policies.natural.patterns import find_hits, sentences
from policies.teacher import LocalChatModel
from tests.fixtures import REPO

ANSWER = "Here is what I found."
QUESTION = "Tell me something about it."

CASES = {
    "aware_with_correction": [
        "No, the capital of Canada is Ottawa.",
        "Nope, it was 1969.",
        "It should be 'their', not 'there'.",
        "The correct answer is 42.",
        "That's wrong, the author is Tolkien.",
        "I asked for a list, not a paragraph.",
        "Please use Fahrenheit instead.",
        "Correction: the train leaves at 6.",
        "I thought it was the other way round.",
        "You forgot the baking soda.",
        "Too long. Keep it to two sentences.",
        "Actually, Mars has two moons.",
    ],
    "aware_without_correction": [
        "That's incorrect.",
        "This is wrong.",
        "Nope.",
        "That code doesn't compile.",
        "You didn't answer my question.",
        "Thanks, but that's not right.",
        "Not helpful at all.",
        "This makes no sense.",
        "I get a syntax error when I run it.",
        "You misunderstood me.",
        "Still not working.",
        "Way too wordy.",
    ],
    "clarification": [
        "What do you mean by 'idempotent'?",
        "Can you explain that in simpler terms?",
        "Could you give me an example?",
        "I don't understand the second step.",
        "I'm confused.",
        "Are you sure about that?",
        "Really?",
        "Is that correct?",
        "How do you know?",
    ],
    "positive": [
        "Thanks!",
        "Thank you so much, that helps.",
        "Perfect.",
        "Awesome, it works now.",
        "That's exactly what I needed.",
        "Great answer.",
        "Spot on.",
        "Makes sense now, cheers.",
        "Much appreciated!",
        "Exactly!",
    ],
    "none": [
        "No problem, let's move on. How do I bake bread?",
        "What about Spain?",
        "Can you write a cover letter for a nurse position?",
        "Why is the sky blue?",
        "Never mind. What time is it in Tokyo?",
        "Now translate it into German.",
        "Can I use honey instead of sugar in this recipe?",
        "How do I make my dog stop barking at night?",
        "Great Barrier Reef facts, please.",
    ],
}

DOUBTS = {"Are you sure about that?", "Really?", "Is that correct?", "How do you know?"}

PRINCIPLES = [
    "From now on, answer in bullet points.",
    "Going forward please skip the disclaimers.",
    "Whenever I ask about recipes, give me metric units.",
    "When I ask for code, always add type hints.",
    "Stop using emojis in my work emails.",
    "Never use exclamation marks.",
    "Always cite your sources.",
    "No more jokes in my status reports.",
    "Please remember that I'm allergic to nuts.",
    "For all my SQL questions, use PostgreSQL syntax.",
    "Don't use jargon when you explain things to me.",
    "Next time, ask before assuming my operating system.",
    "In general I want the conclusion first.",
    "Use this tone for every post you write for me.",
]

# Phrasing the second round of cues was written for, in sentences of no bench split; and turns
# that must stay what they are although they share words with those cues.
ROUND_TWO = {
    "aware_with_correction": ["I'm fairly sure it's Helsinki.", "It's more like 40 minutes by train.",
                              "As a numbered list please.", "Without the jargon please.",
                              "You need to call close() on the file first."],
    "aware_without_correction": ["That's much longer than I asked for.", "Won't compile.",
                                 "It fails with a NullPointerException.", "Meh.",
                                 "You gave me back my own paragraph.", "That has nothing to do with my question.",
                                 "This is far too generic to use."],
    "clarification": ["Hm, was it really the first one?", "Do you have a small code example?",
                      "Why would that be faster?"],
    "positive": ["Love the structure.", "Great analogy, my students will get it."],
    "repeat_rephrase": ["Sorry, I wasn't clear. I need the opening hours."],
    "none": ["What is a KeyError?", "I want to learn about ValueError handling in Python.",
             "Why is the sea salty?", "Is it really that hard to learn Rust? I'm thinking of starting."],
}


@pytest.mark.parametrize("category,turn", [(c, t) for c, ts in ROUND_TWO.items() for t in ts])
def test_round_two_cues(category, turn):
    fb = detect_rules(turn, ANSWER, QUESTION)
    assert fb.category == category, (turn, fb.cues)


def test_a_reply_to_the_assistants_question_is_not_a_correction():
    assert detect_rules("In the morning, please.", "Sure! When would you like the reminder?", "Set a reminder").category == "none"
    assert detect_rules("In the morning, please.", "Your reminder is set for 9 pm.", "Set a reminder").category == "aware_with_correction"


NOT_PRINCIPLES = [
    "Is it always true that even numbers are divisible by 2?",
    "How do I stop my cat from scratching the sofa?",
    "Never mind, it's fine.",
    "I never said that.",
    "Use a smaller font in this one.",
    "Thanks, that's all.",
]


@pytest.mark.parametrize("category,turn", [(c, t) for c, ts in CASES.items() for t in ts])
def test_category_cues(category, turn):
    fb = detect_rules(turn, ANSWER, QUESTION)
    assert fb.category == category, (turn, fb.cues)
    expected = {"aware_with_correction": "negative", "aware_without_correction": "negative", "positive": "positive",
                "none": "neutral", "clarification": "negative" if turn in DOUBTS else "neutral"}[category]
    assert fb.polarity == expected
    assert fb.source == "rules"
    if category == "none":
        assert fb.span is None
    else:
        assert fb.span and fb.span in turn


@pytest.mark.parametrize("turn", PRINCIPLES)
def test_principles_detected(turn):
    fb = detect_rules(turn, ANSWER, QUESTION)
    assert fb.principle, (turn, fb.cues)
    # A rule stated right after an answer says what to change.
    assert fb.category == "aware_with_correction" and fb.polarity == "negative"
    assert fb.span in turn


@pytest.mark.parametrize("turn", NOT_PRINCIPLES)
def test_not_principles(turn):
    assert not detect_rules(turn, ANSWER, QUESTION).principle


def test_praise_with_a_rule_stays_positive():
    fb = detect_rules("Great summary! From now on keep them this short.", ANSWER, QUESTION)
    assert (fb.category, fb.polarity, fb.principle) == ("positive", "positive", True)


def test_criticism_after_praise_decides():
    fb = detect_rules("Thanks, but the second step throws an exception.", ANSWER, QUESTION)
    assert fb.category == "aware_without_correction" and fb.polarity == "negative"
    # The "but" clause without a known complaint phrase still takes the praise back.
    fb = detect_rules("It runs, but the output is empty.", ANSWER, QUESTION)
    assert fb.polarity == "negative" and "praise_then_but" in fb.cues


def test_no_answering_the_assistants_question_is_not_a_verdict():
    asked = "Did you already try restarting the router?"
    assert detect_rules("No, I haven't. Should I?", asked, "My internet is slow.").category == "none"
    assert detect_rules("No.", "Would you like more examples?", "Show me a haiku.").category == "none"
    # The same words after a statement are a verdict.
    assert detect_rules("No, I haven't.", "You said you restarted it.", "q").category == "aware_without_correction"


def test_question_about_a_term_from_the_answer_is_clarification():
    answer = "Use a debounce on the input handler so it fires less often."
    fb = detect_rules("What's a debounce?", answer, "My search box lags when I type.")
    assert fb.category == "clarification"
    # A question about something new is not.
    assert detect_rules("What's a good mechanical keyboard?", answer, "My search box lags.").category == "none"


def test_spans_are_always_verbatim():
    turns = [t for ts in CASES.values() for t in ts] + PRINCIPLES + NOT_PRINCIPLES + [
        "Hmm… that’s not right, it’s “Zürich”.", "  No,   it's 7.  ", "THANKS!!!", "ok\nthat's wrong\nit's 5"]
    for turn in turns:
        fb = detect_rules(turn, ANSWER, QUESTION)
        assert fb.span is None or fb.span in turn, turn
        assert (fb.span is None) == (fb.category == "none"), turn


def test_sentence_split_keeps_abbreviations_and_decimals():
    text = "Raw flour can carry E. coli bacteria. Pi is 3.14, not 3.41! Right?"
    parts = [text[s:e] for s, e in sentences(text)]
    assert parts == ["Raw flour can carry E. coli bacteria.", "Pi is 3.14, not 3.41!", "Right?"]


def test_curly_apostrophes_match():
    assert {h.cue.name for h in find_hits("That’s wrong")} >= {"wrong"}


# -- reformulation ------------------------------------------------------------------------------

def test_similarity_orders_rephrases_above_new_questions():
    q = "How do I delete a branch in git?"
    assert similarity(q, q) == 1.0
    rephrase = similarity(q, "git: how to remove a branch?")
    new = similarity(q, "And how do I rename a file?")
    assert rephrase >= 0.5 > new
    assert similarity("", q) == 0.0


def test_repeat_detected_from_similarity():
    messages = [{"role": "user", "content": "Who won the 2018 World Cup?"},
                {"role": "assistant", "content": "The World Cup is held every four years."},
                {"role": "user", "content": "Which country won the World Cup in 2018?"}]
    fb = detect_turn(messages)
    assert fb.category == "repeat_rephrase" and fb.polarity == "negative"
    assert fb.span == messages[2]["content"] and fb.similarity >= 0.5


def test_clarifying_question_reusing_the_words_is_not_a_repeat():
    fb = detect_rules("What do you mean by capital?", "Sydney.", "What is the capital of Australia?")
    assert fb.similarity >= 0.5 and fb.category == "clarification"


def test_repeat_announced():
    fb = detect_rules("Let me rephrase: which train goes to the airport?", ANSWER, "How do I get to the airport?")
    assert fb.category == "repeat_rephrase"


def test_low_flr_lowers_the_rephrase_threshold():
    prev, turn = "What's the best way to learn Spanish fast?", "Good ways to pick up Spanish quickly?"
    sim = similarity(prev, turn)
    config = RuleConfig(rephrase_threshold=sim + 0.05, flr_low=-5.0, flr_high=-3.0)
    assert detect_rules(turn, ANSWER, prev, config=config).category == "none"
    assert detect_rules(turn, ANSWER, prev, flr=-4.0, config=config).category == "none"  # between quartiles
    low = detect_rules(turn, ANSWER, prev, flr=-6.0, config=config)
    assert low.category == "repeat_rephrase" and low.flr == -6.0


# -- conversations ------------------------------------------------------------------------------

def test_detect_conversation_indices():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of Italy?"},
        {"role": "assistant", "content": "Milan."},
        {"role": "user", "content": "No, it's Rome."},
        {"role": "user", "content": "Hello?"},  # follows a user turn: not judged
        {"role": "assistant", "content": "Sorry, Rome."},
        {"role": "user", "content": "Thanks."},
    ]
    assert feedback_turns(messages) == [3, 6]
    results = detect_conversation(messages, flr_scores={2: -1.5})
    assert [i for i, _ in results] == [3, 6]
    assert results[0][1].category == "aware_with_correction" and results[0][1].flr == -1.5
    assert results[1][1].category == "positive" and results[1][1].flr is None


def test_detect_turn_rejects_a_turn_without_an_answer_before_it():
    with pytest.raises(ValueError):
        detect_turn([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError):
        detect_turn([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])


# -- LLM layer ----------------------------------------------------------------------------------

CONV = [{"role": "user", "content": "What's the capital of Australia?"},
        {"role": "assistant", "content": "Sydney."},
        {"role": "user", "content": "Hmm, that's wrong. I'm fairly sure it's Canberra."}]


def label(**kw) -> str:
    base = {"category": "aware_with_correction", "polarity": "negative", "span": "it's Canberra", "principle": False}
    return json.dumps({**base, **kw})


def test_llm_good_json():
    llm = FakeListChatModel(responses=[f"Here you go:\n```json\n{label()}\n```"])
    fb = detect_turn(CONV, llm=llm)
    assert fb.source == "llm" and fb.error is None
    assert (fb.category, fb.polarity, fb.span, fb.principle) == ("aware_with_correction", "negative", "it's Canberra", False)


def test_llm_span_not_verbatim_is_dropped():
    turn = "Canberra."  # the rules see no cue here, so there is no rule span to fall back on
    messages = CONV[:2] + [{"role": "user", "content": turn}]
    assert detect_turn(messages).category == "none"
    llm = FakeListChatModel(responses=[label(span="The capital is Canberra, not Sydney")])
    fb = detect_turn(messages, llm=llm)
    assert fb.source == "llm" and fb.category == "aware_with_correction"
    assert fb.span is None
    assert any("dropped" in n for n in fb.notes)
    good = detect_turn(messages, llm=FakeListChatModel(responses=[label(span="Canberra")]))
    assert fb.confidence < good.confidence


def test_llm_span_falls_back_to_the_rule_span_when_they_agree():
    llm = FakeListChatModel(responses=[label(span="invented words")])
    fb = detect_turn(CONV, llm=llm)
    rules = detect_turn(CONV)
    assert rules.category == "aware_with_correction"
    assert fb.span == rules.span and fb.span in CONV[2]["content"]


def test_llm_span_case_and_spacing_forgiven_but_text_is_the_turns():
    assert verbatim_span("IT'S   canberra", CONV[2]["content"]) == "it's Canberra"
    assert verbatim_span("“it's Canberra”", CONV[2]["content"]) == "it's Canberra"
    assert verbatim_span("Brisbane", CONV[2]["content"]) is None


def test_llm_garbage_then_good_retries():
    answers = iter([AIMessage(content="It is a correction, I think."), AIMessage(content=label())])
    llm = GenericFakeChatModel(messages=answers)
    fb = detect_turn(CONV, llm=llm, retries=1)
    assert fb.source == "llm" and fb.error is None and fb.span == "it's Canberra"
    assert next(answers, None) is None  # both scripted answers were used


def test_llm_garbage_forever_is_recorded_and_rules_used():
    llm = FakeListChatModel(responses=["no idea", '{"category": "very negative"}'])
    fb = detect_turn(CONV, llm=llm, retries=1)
    rules = detect_turn(CONV)
    assert fb.source == "rules" and fb.category == rules.category and fb.span == rules.span
    assert fb.error and "NaturalLabel" in fb.error
    assert fb.raw == ["no idea", '{"category": "very negative"}']


def test_llm_none_has_no_span_and_is_neutral():
    llm = FakeListChatModel(responses=[label(category="none", polarity="negative", span="Hmm.")])
    fb = detect_turn(CONV, llm=llm)
    assert (fb.category, fb.polarity, fb.span) == ("none", "neutral", None)


def test_local_model_is_not_trusted_unless_forced():
    calls = []

    def generate(messages, max_tokens):
        calls.append(messages)
        return label()

    local = LocalChatModel(generate_fn=generate)
    assert detect_turn(CONV, llm=local).source == "rules" and not calls
    assert detect_turn(CONV, llm=local, force_llm=True).source == "llm" and len(calls) == 1


def test_prompt_carries_the_turn_the_answer_and_the_guidelines():
    system, human = classify_messages("No, it's Canberra.", "Sydney.", "Capital of Australia?")
    for category in ("repeat_rephrase", "aware_with_correction", "aware_without_correction", "clarification",
                     "positive", "none"):
        assert category in system.content
    assert "No, it's Canberra." in human.content and "Sydney." in human.content


def test_result_model_round_trips():
    fb = detect_rules("No, it's Canberra.", "Sydney.", "Capital?")
    assert NaturalFeedback.model_validate_json(fb.model_dump_json()) == fb


def test_bench_data_is_consistent():
    """bench/data/natural_labelled.jsonl and natural_final4.jsonl: every judged turn labelled once,
    valid values, spans verbatim, and enough of every category for per-category figures to mean
    something."""
    from collections import Counter

    from policies.natural import CATEGORIES, POLARITIES

    rows = [json.loads(line) for name in ("natural_labelled", "natural_final4")
            for line in (REPO / "bench" / "data" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["split"] for r in rows} == {"heldout2", "test", "final4"}
    assert len(rows) >= 60 and len({r["id"] for r in rows}) == len(rows)
    counts, principles = Counter(), 0
    for r in rows:
        assert r["split"] in ("heldout2", "test", "final4")
        assert sorted(lab["turn"] for lab in r["labels"]) == feedback_turns(r["messages"]), r["id"]
        for lab in r["labels"]:
            turn = r["messages"][lab["turn"]]["content"]
            assert lab["category"] in CATEGORIES and lab["polarity"] in POLARITIES
            assert (lab["span"] is None) == (lab["category"] == "none")
            assert lab["span"] is None or lab["span"] in turn
            counts[lab["category"]] += 1
            principles += lab["principle"]
    assert min(counts[c] for c in CATEGORIES) >= 10 and principles >= 15
