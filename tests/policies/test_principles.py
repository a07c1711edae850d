"""Principles: proposal (teacher and rules), clustering, ICAI voting and reconstruction.

The teacher is langchain-core's fake chat models with scripted answers (is_capable() is True
for them); the rule reader is what runs when the teacher is the small local model or none.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage

from policies.checks import parse_check, run_check
from policies.principles.icai import (
    Pair, PairProposal, parse_choice, propose_from_pair, rank_principles, reconstruct, score_principle, vote,
)
from policies.principles.rules import COMMON_EMOJIS
from policies.principles import (
    GLOBAL_DOMAIN, Evidence, FeedbackInput, Principle, ProposalFailure, cluster_principles, cluster_texts,
    nearest, propose_principle,
)
from policies.teacher import LocalChatModel, is_capable
from tests.fixtures import REPO


class RecordingChat(FakeListChatModel):
    """A scripted fake that also keeps the prompts it was sent."""

    prompts: list[str] = []

    def _call(self, messages: list, *args: Any, **kwargs: Any) -> str:
        self.prompts.append("\n".join(str(m.content) for m in messages))
        return super()._call(messages, *args, **kwargs)


EMAIL = FeedbackInput(id="fb-1", kind="comment", prompt="Draft an email to my team about Friday's release",
                      answer="Hi team! 🎉 The release is on Friday 🚀", text="no emojis in work emails please")
GOOD = {"text": "Do not use emojis in work emails", "domain": "work emails", "effect": "no emojis",
        "source": "critique", "checks": ['contains_none_strings ["🎉", "🚀"]']}


def test_capable_teacher_proposal_is_parsed_with_checks_and_evidence():
    llm = FakeListChatModel(responses=["Sure! Here it is:\n```json\n" + json.dumps(GOOD) + "\n```"])
    assert is_capable(llm)
    p = propose_principle(EMAIL, llm)
    assert isinstance(p, Principle)
    assert (p.text, p.domain, p.effect, p.source, p.proposer) == (GOOD["text"], "work emails", "no emojis", "critique", "llm")
    assert p.checks == ['contains_none_strings ["🎉", "🚀"]']
    assert p.evidence == [Evidence(kind="feedback", id="fb-1")]
    assert not run_check(parse_check(p.checks[0]), EMAIL.answer)


def test_a_bad_check_is_sent_back_and_the_retry_is_used():
    bad = {**GOOD, "checks": ["shout_loudly \"x\""]}
    llm = RecordingChat(responses=[json.dumps(bad), json.dumps(GOOD)], prompts=[])
    p = propose_principle(EMAIL, llm)
    assert isinstance(p, Principle) and p.checks == GOOD["checks"]
    assert "unknown metric" in llm.prompts[1]  # the parse error went back to the teacher


def test_an_answer_that_never_parses_is_a_recorded_failure_with_raw_text():
    llm = FakeListChatModel(responses=["I think you should not use emojis.", "{not json", "still no"])
    result = propose_principle(EMAIL, llm, retries=2)
    assert isinstance(result, ProposalFailure)
    assert result.ref == "fb-1" and result.task == "propose_principle" and result.schema_name == "ProposalAnswer"
    assert result.raw == ["I think you should not use emojis.", "{not json", "still no"]
    assert len(result.errors) == 3


def test_natural_span_evidence_kind():
    span = FeedbackInput(id="nf-9", kind="natural_span", text="from now on, no emojis in my work emails please")
    p = propose_principle(span, None)
    assert p.evidence == [Evidence(kind="natural", id="nf-9")]


def test_rule_fallback_no_emojis_in_work_emails():
    fb = FeedbackInput(id="fb-2", kind="comment", text="from now on, no emojis in my work emails please")
    local = LocalChatModel(generate_fn=lambda messages, n: "unused")
    for llm in (None, local):  # the small local model is not trusted to write principles
        p = propose_principle(fb, llm)
        assert isinstance(p, Principle) and p.proposer == "rules"
        assert p.text == "Do not use emojis in work emails"
        assert p.domain == "work emails" and p.effect == "no emojis" and p.source == "critique"
        check = parse_check(p.checks[0])
        assert check.metric == "contains_none_strings" and set(COMMON_EMOJIS) <= set(check.value)
        assert not run_check(check, "Hi team 😀") and run_check(check, "Hi team")


def test_rule_fallback_gardening_prefix():
    fb = FeedbackInput(id="fb-3", kind="comment", text="When I ask about gardening, begin your answer with 'Green thumb:'")
    p = propose_principle(fb, None)
    assert p.text == "When the user asks about gardening, begin your answer with 'Green thumb:'"
    assert p.domain == "gardening" and p.checks == ['starts_with "Green thumb:"']
    assert p.confidence >= 0.5


def test_rule_fallback_other_shapes():
    def rules(text, kind="comment", **kw):
        return propose_principle(FeedbackInput(id="x", kind=kind, text=text, **kw), None)

    p = rules("Don't use emojis when drafting emails to my boss.")
    assert p.domain == "drafting emails to my boss" and p.text.startswith("Do not use emojis when drafting emails")
    assert rules("Be more concise when emailing my boss Jared").checks == ["length"]
    p = rules("Never start with 'Sure'")
    assert p.domain == GLOBAL_DOMAIN and p.checks == ['doesnt_start_with "Sure"'] and p.confidence < 0.7
    assert rules("Use '&' instead of 'and' in Slack DMs to my colleagues").checks == [
        'contains_all_strings ["&"]', 'contains_none_strings [" and "]']
    assert rules("please reply in German when I write to my grandmother").checks == ['is_language "de"']
    assert rules("Write a poem about cats") is None  # a request, not a standing rule
    assert rules("that's wrong, the capital is Canberra") is None
    assert rules("too long").checks == ["length"]


def test_correction_without_rule_becomes_a_rewrite_principle():
    emoji = propose_principle(FeedbackInput(id="c1", kind="correction", prompt="Email my landlord about the leak",
                                            answer="Hi! 😊 The sink leaks 💧", text="Hello, the sink leaks."), None)
    assert emoji.source == "rewrite" and emoji.effect == "no emojis"
    assert not run_check(emoji.checks[0], "Hi 😊") and emoji.domain.startswith("requests like: Email my landlord")
    generic = propose_principle(FeedbackInput(id="c2", kind="correction", prompt="Capital of Australia?",
                                              answer="Sydney.", text="Canberra."), None)
    assert generic.source == "rewrite" and generic.confidence <= 0.2 and generic.checks == []


def test_clustering_merges_paraphrases_but_not_other_rules():
    texts = ["Don't use emojis in work emails", "Avoid emojis in work emails",
             "Begin gardening answers with 'Green thumb:'"]
    clusters = cluster_texts(texts)
    assert [0, 1] in clusters and [2] in clusters


def test_cluster_principles_merges_evidence_and_support():
    def p(text, ev, **kw):
        return Principle(text=text, domain="work emails", effect="no emojis", source="critique",
                         evidence=[Evidence(id=e) for e in ev], **kw)

    ps = [p("Don't use emojis in work emails", ["a", "b"]),
          p("Avoid emojis in work emails", ["b", "c"], checks=['contains_none_strings ["😀"]']),
          p("Do not use emojis in work emails", ["d"]),
          Principle(text="Begin gardening answers with 'Green thumb:'", domain="gardening", effect="prefix",
                    source="critique", evidence=[Evidence(id="g")])]
    clusters = cluster_principles(ps)
    assert len(clusters) == 2
    top = clusters[0]
    assert sorted(top.members) == [0, 1, 2] and top.support == 4
    assert [e.id for e in top.principle.evidence] == ["a", "b", "c", "d"]
    assert top.principle.checks == ['contains_none_strings ["😀"]']  # borrowed from a member
    assert 0 < top.cohesion <= 1
    assert clusters[1].members == [3] and clusters[1].support == 1
    assert nearest("Please avoid emojis in work emails", [q.text for q in ps[2:]]) is not None
    assert nearest("Answer in French", [q.text for q in ps]) is None


PAIRS = [Pair(id=f"p{i}", prompt=f"Tell a story {i}", chosen=f"A cat story {i}", rejected=f"A dog story {i}")
         for i in range(4)]


def test_votes_alternate_order_and_count_garbage_as_invalid():
    # Pair 0 shown as (chosen, rejected), pair 1 flipped, and so on.
    llm = FakeListChatModel(responses=['{"preferred": "A"}', "B", "I like turtles", '{"preferred": "neither"}'])
    score = score_principle("Select the response that features a cat", PAIRS, llm)
    assert {k: score[k] for k in ("for", "against", "not_relevant", "invalid", "total")} == {
        "for": 2, "against": 0, "not_relevant": 1, "invalid": 1, "total": 4}
    assert score["agreement"] == 1.0 and score["relevance"] == round(2 / 3, 4)
    assert score["invalid_raw"] == ["I like turtles"]


def test_position_bias_cancels():
    always_a = FakeListChatModel(responses=['{"preferred": "A"}'])
    score = score_principle("Select the response that features a cat", PAIRS, always_a)
    assert score["for"] == score["against"] == 2
    assert rank_principles([("cat", score)]) == []  # not kept: for is not above against
    assert vote("x", PAIRS[0], always_a, flip=True) == "against"
    assert vote("x", PAIRS[0], always_a, flip=False) == "for"


def test_rank_keeps_and_orders_by_for_minus_against():
    s = lambda f, a, n=0: {"for": f, "against": a, "not_relevant": n, "invalid": 0,
                           "agreement": f / (f + a) if f + a else None, "relevance": (f + a) / (f + a + n)}
    ranked = rank_principles([("weak", s(3, 2)), ("strong", s(6, 1)), ("irrelevant", s(1, 0, 99)), ("bad", s(1, 4))])
    assert [name for name, _ in ranked] == ["strong", "weak"]


def test_parse_choice():
    assert parse_choice('```json\n{"preferred": "B"}\n```') == "B"
    assert parse_choice("Response A is better") == "A"
    assert parse_choice('{"preferred": "neither"}') == "neither"
    assert parse_choice("A good answer would mention cats") is None
    assert parse_choice("Both Response A and Response B are fine") is None


def test_reconstruction_with_and_without_constitution():
    without = RecordingChat(responses=['{"preferred": "A"}'], prompts=[])
    res = reconstruct(PAIRS, without)
    assert (res["correct"], res["wrong"], res["invalid"], res["agreement"]) == (2, 2, 0, 0.5)
    assert "principles" not in without.prompts[0]
    # The judge with the constitution picks right on 3 pairs and answers garbage once.
    with_c = RecordingChat(responses=["A", "B", "A", "no idea"], prompts=[])
    res = reconstruct(PAIRS, with_c, constitution=["Select the response that features a cat"])
    assert res["picks"] == ["chosen", "chosen", "chosen", "invalid"]
    assert res["agreement"] == 0.75 and res["agreement_valid"] == 1.0 and res["invalid"] == 1
    assert "1. Select the response that features a cat" in with_c.prompts[0]


def test_propose_from_pair_parses_salvages_and_records_failures():
    good = GenericFakeChatModel(messages=iter([AIMessage(content='{"principles": ["mentions a cat"]}')]))
    out = propose_from_pair(PAIRS[0], good)
    assert isinstance(out, PairProposal) and out.principles == ["Select the response that mentions a cat"]
    assert not out.salvaged
    salvage = FakeListChatModel(responses=["Select the response that has a cat in it.", "again no json"])
    out = propose_from_pair(PAIRS[1], salvage)
    assert out.salvaged and out.principles == ["Select the response that has a cat in it"]
    fail = FakeListChatModel(responses=["cats!", "dogs!"])
    out = propose_from_pair(PAIRS[2], fail)
    assert isinstance(out, ProposalFailure) and out.raw == ["cats!", "dogs!"] and out.ref == "p2"


def test_an_empty_select_principle_is_refused_and_identical_texts_cluster():
    empty = FakeListChatModel(responses=['{"principles": ["Select the response that"]}'])
    out = propose_from_pair(PAIRS[0], empty, retries=0)
    assert isinstance(out, ProposalFailure) and "two words" in out.errors[0]
    assert cluster_texts(["Select the response that", "Select the response that", "Answer in French"]) == [[0, 1], [2]]


def _bench_module():
    import importlib.util

    path = REPO / "bench" / "icai.py"
    spec = importlib.util.spec_from_file_location("bench_icai", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_reads_icai_csv_and_flips_labels(tmp_path):
    bench = _bench_module()
    csv_path = tmp_path / "icai_synthetic_data_x.csv"
    import csv

    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "text_a", "text_b", "preferred_text"])
        w.writerow([0, "Instruction: Pet story?\n\nOutput: A cat.", "Instruction: Pet story?\n\nOutput: A dog.", "text_b"])
    (pair,) = bench.load_pairs(csv_path)
    assert (pair.prompt, pair.chosen, pair.rejected) == ("Pet story?", "A dog.", "A cat.")
    (flipped,) = bench.load_pairs(csv_path, unaligned=True)
    assert (flipped.chosen, flipped.rejected) == ("A cat.", "A dog.")
    # The local teacher's answer is started for it at the JSON the prompt asks for.
    from policies.principles.icai import PAIR_PROMPT, VOTE_PROMPT

    vote_prompt = VOTE_PROMPT.format(principle="p", prompt="q", a="a", b="b")
    assert bench.json_prefix([{"role": "user", "content": vote_prompt}]) == '{"preferred": "'
    pair_prompt = PAIR_PROMPT.format(n=1, prompt="q", chosen="a", rejected="b")
    assert bench.json_prefix([{"role": "user", "content": pair_prompt}]) == '{"principles": ["Select the response that'
    assert bench.json_prefix([{"role": "user", "content": "hello"}]) == ""


class CatOracle(FakeListChatModel):
    """A scripted judge that knows the hidden rule (cats over dogs), but only applies it when a
    principle or constitution mentioning cats is in its prompt; otherwise it always says "A"."""

    responses: list[str] = ["unused"]

    def _call(self, messages: list, *args: Any, **kwargs: Any) -> str:
        prompt = str(messages[-1].content)
        if "Preferred answer:" in prompt:
            return '{"principles": ["Select the response that features a cat"]}' if "cat" in prompt.split(
                "Preferred answer:")[1].split("Other answer:")[0] else '{"principles": ["Select the response that is kind"]}'
        a, b = prompt.split("Response A:")[1].split("Response B:")
        knows_rule = "features a cat" in prompt.split("Instruction:")[0]
        if knows_rule and ("cat" in a) != ("cat" in b):
            return '{"preferred": "A"}' if "cat" in a else '{"preferred": "B"}'
        if "Principle:" in prompt:  # a vote: the principle has nothing to say here
            return '{"preferred": "neither"}'
        return '{"preferred": "A"}'


def test_bench_pipeline_keeps_the_true_principle_and_reconstructs_with_it():
    import argparse

    bench = _bench_module()
    pairs = PAIRS + [Pair(id="p4", prompt="Pet?", chosen="A dog", rejected="A fish")]  # a pair the rule misses
    args = argparse.Namespace(per_pair=1, retries=0, threshold=0.45, candidates=8, min_relevance=0.1, top_k=5)
    res = bench.run_set("toy", pairs, CatOracle(), args)
    assert res["proposals"] == 5 and res["proposal_failures"] == 0 and res["clusters"] == 2
    votes = {v["principle"]: v for v in res["votes"]}
    cat = votes["Select the response that features a cat"]
    assert (cat["for"], cat["against"], cat["not_relevant"]) == (4, 0, 1)
    assert votes["Select the response that is kind"]["not_relevant"] == 5
    assert res["constitution"] == ["Select the response that features a cat"] and res["kept"] == 1
    assert res["without"]["agreement"] == 0.6  # "A" every time, orders alternating: 3 of 5
    # With the constitution: right on the 4 cat pairs; the dog/fish pair (shown A-first) by bias.
    assert res["with"]["correct"] == 5 and res["with"]["invalid"] == 0 and res["with_unfiltered"] is None


def test_a_shared_template_does_not_make_different_rules_near_duplicates():
    gardening = "When the user asks about gardening, begin your answer with 'Green thumb:'"
    assert nearest("When the user asks about cooking, begin your answer with 'Chef:'", [gardening]) is None
    assert nearest("Begin gardening answers with 'Green thumb:'", [gardening]) is not None
