"""C3PO synthesis: prompt sets from a scripted teacher and from templates, verified revisions,
row formats and the content hash. No model: the served model is a deterministic function."""

from __future__ import annotations

import json

import pytest
from langchain_core.language_models import FakeListChatModel

from policies.principles import Principle
from policies.synthesis import GENERAL_POOL, parse_domain, template_prompts
from policies.synthesis import (PromptSets, SynthesisConfig, build_prompt_sets, content_hash, is_stub,
                                synthesize, synthesize_from_prompts)

GARDEN = Principle(text="When I ask about gardening, begin your answer with 'Green thumb:'", domain="gardening",
                   effect="begin the answer with 'Green thumb:'", source="critique",
                   checks=['starts_with "Green thumb:"'])


def echo_model(convs, max_tokens):
    """A served model: answers "Answer about <prompt>"; revises by writing the marker first."""
    out = []
    for c in convs:
        text = c[-1]["content"]
        if text.startswith("Here is a request"):
            body = text.split("Answer:\n", 1)[1].split("\n\nRevise", 1)[0]
            out.append("Green thumb: " + body)
        else:
            out.append(f"Answer about {text}")
    return out


def test_teacher_prompt_sets_record_a_garbage_answer_and_use_logged_traffic():
    teacher = FakeListChatModel(responses=[
        '{"categories": ["vegetable gardening", "house plants", "lawn care"]}',
        '{"in_scope": ["How deep do I plant garlic cloves?", "When should I sow carrots?"],'
        ' "near_scope": ["How do I roast garlic?", "How do I cook carrots?"]}',
        "I am sorry, I cannot help with that.",  # category 2: three unparseable tries
        "still not JSON",
        "{broken",
        '{"in_scope": ["Why is my fern turning brown?", "How often do I water a cactus?"],'
        ' "near_scope": ["How do I clean a fish tank?", "What is a good indoor workout?"]}',
    ])
    logged = ["How do I water my garden in July?", "What is the capital of France?", "gardening gloves or not?"]
    cfg = SynthesisConfig(n_in_scope=4, n_near_scope=4, n_out_of_scope=5, prompts_per_category=2, n_categories=3)
    sets = build_prompt_sets(GARDEN, teacher, logged, cfg)

    assert sets.generator == "teacher"
    assert sets.categories == ["vegetable gardening", "house plants", "lawn care"]
    assert len(sets.failures) == 1
    fail = sets.failures[0]
    assert (fail.task, fail.ref, len(fail.raw)) == ("category_prompts", "house plants", 3)
    assert fail.raw[0] == "I am sorry, I cannot help with that."
    # Half of the in-scope set may come from logged traffic: both logged gardening prompts fit.
    assert sets.sources["in_scope"] == {"logged": 2, "teacher": 2}
    assert {"How do I water my garden in July?", "gardening gloves or not?"} <= set(sets.in_scope)
    assert len(sets.in_scope) == 4 and len(sets.near_scope) == 4
    assert sets.near_scope[:2] == ["How do I roast garlic?", "How do I cook carrots?"]
    assert sets.out_of_scope[0] == "What is the capital of France?"
    assert sets.sources["out_of_scope"] == {"logged": 1, "pool": 4}


def test_template_prompt_sets_without_teacher_are_disjoint_and_keep_the_domain_out_of_the_pool():
    cfg = SynthesisConfig(n_in_scope=20, n_near_scope=20, n_out_of_scope=20)
    sets = build_prompt_sets(GARDEN, None, [], cfg)
    assert sets.generator == "templates" and not sets.failures
    assert (len(sets.in_scope), len(sets.near_scope), len(sets.out_of_scope)) == (20, 20, 20)
    all_prompts = sets.in_scope + sets.near_scope + sets.out_of_scope
    assert len(set(all_prompts)) == 60
    garden_pool = {p for t, p in GENERAL_POOL if t == "gardening"}
    assert not garden_pool & set(sets.out_of_scope)
    assert "farming" in sets.categories
    # Same seed, same sets: a job that resumes rebuilds what it had.
    assert build_prompt_sets(GARDEN, None, [], cfg).model_dump() == sets.model_dump()


def test_template_generator_swaps_head_noun_and_audience():
    parts = parse_domain("writing an email to my boss Jared")
    assert (parts.kind, parts.head, parts.audience) == ("artefact", "email", "to my boss Jared")
    ins, near = template_prompts("writing an email to my boss Jared", 10, 12)
    assert all("an email to my boss Jared" in p for p in ins)
    assert any("text message to my boss Jared" in p for p in near)  # head noun swapped
    assert any("an email to" in p and "Jared" not in p for p in near)  # audience swapped
    assert not set(ins) & set(near)


def test_a_custom_scope_function_splits_logged_traffic():
    logged = ["alpha one", "beta two", "gamma three"]
    scores = {"alpha one": 1.0, "beta two": 0.3, "gamma three": 0.0}
    sets = build_prompt_sets(GARDEN, None, logged, SynthesisConfig(n_in_scope=4, n_out_of_scope=3),
                             scope_fn=lambda domain, p: scores.get(p, 0.0))
    assert "alpha one" in sets.in_scope
    assert "gamma three" in sets.out_of_scope
    assert "beta two" not in sets.in_scope + sets.near_scope + sets.out_of_scope  # the ambiguous band


def scripted_model(revisions: dict[str, str], baselines: dict[str, str]):
    def fn(convs, max_tokens):
        out = []
        for c in convs:
            text = c[-1]["content"]
            if text.startswith("Here is a request"):
                prompt = text.split("Request:\n", 1)[1].split("\n\nAnswer:", 1)[0]
                out.append(revisions[prompt])
            else:
                out.append(baselines.get(text, f"A plain answer to {text}."))
        return out
    return fn


def test_verification_keeps_repairs_falls_back_to_the_baseline_and_drops():
    base = {p: f"Water the {p.split()[-1]} plants early in the morning, twice a week." for p in "a b c d".split()}
    base["d"] = "Green thumb: already starts right, and it is long enough."
    revisions = {
        "a": "Green thumb: water the plants early in the morning, twice a week.",  # passes: kept
        "b": "Water the plants early in the morning, about twice every week.",  # fails: marker put first
        "c": "Here is the revised answer: Green thumb:",  # a stub: the baseline is repaired instead
        "d": "",  # empty, and the baseline already passes: nothing to learn
    }
    sets = PromptSets(in_scope=list("abcd"), near_scope=["n1"], out_of_scope=["o1", "o2"])
    fn = scripted_model(revisions, base)
    result = synthesize_from_prompts(GARDEN, sets, fn)
    verdicts = {r.prompt: r.verdict for r in result.revisions}
    assert verdicts == {"a": "kept", "b": "repaired", "c": "baseline_repaired", "d": "dropped"}
    assert {k: result.counts[k] for k in ("kept", "repaired", "baseline_repaired", "dropped")} == \
        {"kept": 1, "repaired": 1, "baseline_repaired": 1, "dropped": 1}
    chosen = {r["prompt"]: r["chosen"] for r in result.preferences}
    assert chosen["b"] == "Green thumb: " + revisions["b"]
    assert chosen["c"] == "Green thumb: " + base["c"]
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in result.preferences)
    assert [(r["prompt"], r["weight"]) for r in result.constraints] == [("n1", 0.1), ("o1", 0.2), ("o2", 0.2)]
    # Every chosen answer follows the rule and no pair is chosen == rejected.
    assert all(r["chosen"].startswith("Green thumb:") and r["chosen"] != r["rejected"] for r in result.preferences)

    # A baseline that already follows the rule gives no pair, even with a fine revision.
    passing = scripted_model({"d": "Green thumb: a different but fine answer, long enough."}, base)
    only_d = PromptSets(in_scope=["d"], near_scope=[], out_of_scope=[])
    assert synthesize_from_prompts(GARDEN, only_d, passing).revisions[0].verdict == "dropped"
    loose = SynthesisConfig(skip_passing_baselines=False)
    assert synthesize_from_prompts(GARDEN, only_d, passing, config=loose).revisions[0].verdict == "kept"

    # Minimal edits preferred: every repairable baseline is the chosen answer, no revision asked.
    asked = []
    minimal = synthesize_from_prompts(GARDEN, sets, lambda c, n: asked.extend(c) or fn(c, n),
                                      config=SynthesisConfig(prefer_minimal_edit=True))
    assert [r.verdict for r in minimal.revisions] == ["baseline_repaired"] * 3 + ["dropped"]
    assert all(r["chosen"] == "Green thumb: " + r["rejected"] for r in minimal.preferences)
    assert not any(c[-1]["content"].startswith("Here is a request") for c in asked)

    # Contrast pairs: a near-scope baseline is preferred over itself with the rule applied.
    contrast = synthesize_from_prompts(GARDEN, sets, fn, config=SynthesisConfig(prefer_minimal_edit=True,
                                                                               contrast_near=True))
    assert contrast.counts["contrast_rows"] == 1 and len(contrast.preferences) == len(minimal.preferences) + 1
    near = contrast.preferences[-1]
    assert near["prompt"] == "n1" and near["rejected"] == "Green thumb: " + near["chosen"]
    assert "n1" in [r["prompt"] for r in contrast.constraints]  # still pinned by the NLL term too

    again = synthesize_from_prompts(GARDEN, sets, fn)
    assert again.content_hash == result.content_hash == content_hash(result.preferences, result.constraints)
    changed = [dict(r) for r in result.constraints]
    changed[0]["weight"] = 0.3
    assert content_hash(result.preferences, changed) != result.content_hash
    # Key order does not matter, only the data.
    reordered = [{"rejected": r["rejected"], "chosen": r["chosen"], "prompt": r["prompt"]} for r in result.preferences]
    assert content_hash(reordered, result.constraints) == result.content_hash


def test_unrepairable_checks_drop_and_unchecked_rules_are_flagged():
    digits = Principle(text="Always include a number", domain="gardening", effect="include a number",
                       source="critique", checks=['regex_search "\\\\d"'])
    sets = PromptSets(in_scope=["x"], near_scope=[], out_of_scope=[])
    fn = scripted_model({"x": "No digits in this revision, sadly, none at all."}, {"x": "No digits here at all, sorry."})
    assert synthesize_from_prompts(digits, sets, fn).counts["dropped"] == 1

    free = Principle(text="Be warm", domain="gardening", effect="use a warm tone", source="critique")
    fn = scripted_model({"x": "A warmer answer that is long enough to count."}, {"x": "A cold answer."})
    kept = synthesize_from_prompts(free, sets, fn)
    assert kept.revisions[0].verdict == "unverified" and len(kept.preferences) == 1
    strict = synthesize_from_prompts(free, sets, fn, config=SynthesisConfig(keep_unverified=False))
    assert strict.revisions[0].verdict == "dropped" and not strict.preferences


def test_a_capable_judge_decides_unchecked_revisions_and_its_failures_are_recorded():
    free = Principle(text="Be warm", domain="gardening", effect="use a warm tone", source="critique")
    sets = PromptSets(in_scope=["x", "y", "z"], near_scope=[], out_of_scope=[])
    fn = scripted_model({p: f"A warmer answer for {p}, long enough to count." for p in "xyz"},
                        {p: f"A cold answer for {p}." for p in "xyz"})
    judge = FakeListChatModel(responses=['{"follows_rule": true, "keeps_rest": true}',
                                         '{"follows_rule": false, "keeps_rest": true}',
                                         "no idea", "no idea", "no idea"])
    cfg = SynthesisConfig(teacher_revises=False)
    result = synthesize_from_prompts(free, sets, fn, teacher=judge, config=cfg)
    assert [r.verdict for r in result.revisions] == ["kept", "dropped", "unverified"]
    assert len(result.failures) == 1 and result.failures[0].task == "judge_revision"
    assert result.counts["failures"] == 1


def test_synthesize_end_to_end_writes_the_formats_of_refinery_train(tmp_path):
    from adapters.train import parse_constraints, parse_preferences

    cfg = SynthesisConfig(n_in_scope=6, n_near_scope=5, n_out_of_scope=4, n_eval=3)
    stages = []
    result = synthesize(GARDEN, echo_model, None, ["Any tips for my vegetable garden?"], cfg, on_stage=stages.append)
    assert stages == ["prompts", "baselines", "revisions", "verification"]
    assert result.counts["preference_rows"] == 6 and result.counts["constraint_rows"] == 9
    # Held-out prompts for evaluation: 3 per scope, none of them in a training row.
    held = result.eval_prompts
    assert (len(held.in_scope), len(held.near_scope), len(held.out_of_scope)) == (3, 3, 3)
    used = {r["prompt"] for r in result.preferences + result.constraints}
    assert not used & set(held.in_scope + held.near_scope + held.out_of_scope)
    paths = result.write(tmp_path)
    prefs = [json.loads(line) for line in paths["preferences"].read_text().splitlines()]
    cons = [json.loads(line) for line in paths["constraints"].read_text().splitlines()]
    assert prefs == result.preferences and cons == result.constraints
    assert len(parse_preferences(prefs)) == 6 and len(parse_constraints(cons, 0.2)) == 9
    assert json.loads(paths["eval_prompts"].read_text())["in_scope"] == held.in_scope
    saved = json.loads(paths["synthesis"].read_text())
    assert saved["content_hash"] == result.content_hash
    assert saved["prompts"]["in_scope"][0] == "Any tips for my vegetable garden?"


@pytest.mark.parametrize("revision, stub", [("Green thumb:", True), ("", True), ("same", True),
                                            ("Green thumb: a real answer of some length", False)])
def test_stub_detection(revision, stub):
    checks = GARDEN.checks
    from policies.checks import as_checks

    baseline = "same" if revision == "same" else "a real answer of some length here"
    assert is_stub(revision, baseline, as_checks(checks), GARDEN.effect, 0.25) is stub


def test_a_concision_rule_keeps_shorter_revisions():
    concise = Principle(text="Be concise when emailing my boss", domain="emails to my boss", effect="be more concise",
                        source="critique", checks=["length"])
    sets = PromptSets(in_scope=["x", "y"], near_scope=[], out_of_scope=[])
    fn = scripted_model({"x": "Short and to the point, as asked.", "y": "A much longer answer than before, " * 3},
                        {"x": "A long rambling answer that goes on and on about things.", "y": "A medium answer."})
    result = synthesize_from_prompts(concise, sets, fn)
    # The baseline is never "already concise" against itself; a shorter revision is kept, a longer one
    # cannot be repaired (length is not constructive) and the baseline cannot stand in: dropped.
    assert [r.verdict for r in result.revisions] == ["kept", "dropped"]
