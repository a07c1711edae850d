"""Adapter evaluation on the tiny random model with a random LoRA adapter, and the promotion gate
on hand-built reports."""

from __future__ import annotations

import json

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from adapters.evaluate import effect_present, evaluate_adapter, evaluate_conditions, word_edit_distance
from adapters.gate import GateThresholds, gate
from adapters.report import ConditionResult, EvalReport, ScopeScore
from policies.checks import as_checks
from tests.fixtures.models import make_lora

GARDEN = {"text": "When I ask about gardening, begin your answer with 'Green thumb:'", "domain": "gardening",
          "effect": "begin the answer with 'Green thumb:'", "checks": ['starts_with "Green thumb:"']}
PROMPTS = {"in_scope": ["How do I plant tulips?", "When do I prune roses?"],
           "near_scope": ["How do I cook rice?"], "out_of_scope": ["What is a covalent bond?", "Why is the sky blue?"]}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, model_cache, tmp_path_factory):
    import torch

    from adapters.model import load_model

    torch.set_num_threads(1)
    loaded = load_model(str(tiny_model_dir), model_cache, device="cpu")
    adapter = make_lora(tiny_model_dir, tmp_path_factory.mktemp("lora"), seed=3)
    return loaded.model, loaded.tokenizer, adapter


def test_report_on_the_tiny_model_with_a_random_adapter(tiny, tmp_path):
    from peft import PeftModel

    from adapters.generate import generate

    model, tok, adapter = tiny
    report = evaluate_adapter(model, tok, adapter, GARDEN, PROMPTS, max_new_tokens=6, batch_size=4)

    assert list(report.conditions) == ["base", "in_context", "adapter"]
    assert report.method == "checks" and report.comparison == "at_least_baseline" and report.candidate == "adapter"
    for cond in report.conditions.values():
        assert [len(cond.answers[s]) for s in ("in_scope", "near_scope", "out_of_scope")] == [2, 1, 2]
        for s in cond.scopes.values():
            assert s.hits is not None and 0.0 <= s.rate <= 1.0 and s.unparseable == 0
        # Per-answer verdicts add up to the scope's hits.
        assert all(sum(cond.effects[s]) == cond.scopes[s].hits for s in cond.scopes)
    base = report.conditions["base"]
    assert base.scopes["out_of_scope"].changed == 0.0 and base.scopes["out_of_scope"].edit_distance == 0.0
    # A random adapter strong enough to move greedy answers: drift shows up.
    moved = report.conditions["adapter"].scopes
    assert any(moved[s].changed > 0 for s in moved)
    assert report.conditions["adapter"].adapter_dir == adapter

    # The base model is handed back as it was: no PEFT wrapper, the same greedy answers.
    assert not isinstance(model, PeftModel) and not any("lora" in n for n, _ in model.named_modules())
    convs = [[{"role": "user", "content": p}] for p in PROMPTS["out_of_scope"]]
    assert generate(model, tok, convs, max_new_tokens=6, batch_size=4, progress=False) == \
        base.answers["out_of_scope"]

    paths = report.write(tmp_path, gate(report))
    data = json.loads(paths["json"].read_text())
    assert data["conditions"]["adapter"]["scopes"]["in_scope"]["n"] == 2
    assert data["gate"]["passed"] in (True, False) and data["gate"]["reasons"]
    md = paths["md"].read_text()
    assert "| adapter (candidate) |" in md and "Promotion gate" in md
    # Sample answers: every prompt of these small sets, with the candidate's verdict.
    assert "## Sample answers" in md
    for prompt in PROMPTS["in_scope"] + PROMPTS["out_of_scope"]:
        assert f"| {prompt[:90]} |" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class ZebraJudge(BaseChatModel):
    """Answers no verdict at all when the request mentions zebras, "no effect" otherwise."""

    @property
    def _llm_type(self) -> str:
        return "zebra-judge"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        text = messages[0].content
        answer = "hmm, hard to say" if "zebra" in text.split("Answer:")[0] else '{"shows_effect": false}'
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer))])


def test_an_adapter_is_judged_as_served_inside_its_scope(tiny):
    model, tok, adapter = tiny
    inside = {"How do I plant tulips?", "How do I cook rice?"}
    report = evaluate_conditions(model, tok, GARDEN, PROMPTS, {"adapter": adapter}, max_new_tokens=6, batch_size=4,
                                 served=lambda q: q in inside)
    assert list(report.conditions) == ["base", "in_context", "adapter everywhere", "adapter"]
    assert report.candidate == "adapter"
    served, alone, base = (report.conditions[n] for n in ("adapter", "adapter everywhere", "base"))
    for s in ("in_scope", "near_scope", "out_of_scope"):
        for q, a, b, e in zip(PROMPTS[s], served.answers[s], base.answers[s], alone.answers[s]):
            assert a == (e if q in inside else b)  # the adapter's answer inside the scope, the base's outside
    assert served.scopes["in_scope"].applied == 0.5 and served.scopes["near_scope"].applied == 1.0
    assert served.scopes["out_of_scope"].applied == 0.0 and served.scopes["out_of_scope"].identical == 1.0
    assert alone.scopes["out_of_scope"].applied is None and alone.scopes["out_of_scope"].identical < 1.0


def test_unparseable_judge_verdicts_are_counted_and_kept(tiny):
    model, tok, adapter = tiny
    principle = {"text": "Talk like a pirate about cars", "domain": "cars", "effect": "speak like a pirate"}
    prompts = {"in_scope": ["Tell me about zebra-striped cars", "How do car engines work?"],
               "near_scope": ["How do bicycles work?"], "out_of_scope": ["Describe a zebra"]}
    report = evaluate_adapter(model, tok, adapter, principle, prompts, judge=ZebraJudge(), max_new_tokens=4)
    assert report.method == "judge" and report.judge_capable
    for cond in report.conditions.values():
        assert cond.scopes["in_scope"].unparseable == 1 and cond.scopes["in_scope"].rate == 0.0
        assert cond.scopes["near_scope"].unparseable == 0
        assert cond.scopes["out_of_scope"].unparseable == 1 and cond.scopes["out_of_scope"].rate is None
    assert len(report.judge_failures) == 6 and len(report.judge_failures[0]["raw"]) == 2  # 1 retry
    passed, reasons = gate(report)
    # Counted over every condition (base and in-context set the bars): 2 of 4 in each of 3.
    assert not passed and any(r.startswith("fail: unparseable judge verdicts 6/12") for r in reasons)


def test_two_adapters_and_no_measure(tiny):
    model, tok, adapter = tiny
    report = evaluate_conditions(model, tok, {"text": "Be nice", "domain": "x", "effect": "be nice"},
                                 {"in_scope": ["hi there"], "near_scope": [], "out_of_scope": ["yo"]},
                                 {"one": adapter, "two": adapter}, max_new_tokens=3)
    assert list(report.conditions) == ["base", "in_context", "one", "two"] and report.candidate == "two"
    # The same adapter twice gives the same answers: each was loaded onto the same base.
    assert report.conditions["one"].answers == report.conditions["two"].answers
    assert report.method == "none" and report.conditions["one"].scopes["in_scope"].rate is None
    passed, reasons = gate(report)
    assert not passed and "no checks and no judge" in reasons[0]


def test_a_weak_judge_is_ignored_unless_allowed(tiny):
    from policies.teacher import LocalChatModel

    model, tok, adapter = tiny
    weak = LocalChatModel(generate_fn=lambda msgs, n: '{"shows_effect": true}')
    principle = {"text": "Be nice", "domain": "x", "effect": "be nice"}
    prompts = {"in_scope": ["hi there"], "near_scope": [], "out_of_scope": ["yo"]}
    report = evaluate_adapter(model, tok, adapter, principle, prompts, judge=weak, max_new_tokens=3)
    assert report.method == "none" and report.ignored_judge == "LocalChatModel"
    assert "LocalChatModel is not capable" in gate(report)[1][0]
    allowed = evaluate_adapter(model, tok, adapter, principle, prompts, judge=weak, max_new_tokens=3,
                               weak_judge_ok=True)
    assert allowed.method == "judge" and not allowed.judge_capable
    assert allowed.conditions["adapter"].scopes["in_scope"].rate == 1.0


def test_effect_for_concision_needs_a_clearly_shorter_answer():
    checks = as_checks(["length"])
    base = "x" * 100
    assert not effect_present(checks, base, base, "at_most_baseline")  # the base is not concise against itself
    assert effect_present(checks, "x" * 80, base, "at_most_baseline")
    assert not effect_present(checks, "x" * 95, base, "at_most_baseline")


def test_word_edit_distance():
    assert word_edit_distance("a b c", "a b c") == 0.0
    assert word_edit_distance("a b c", "a x c") == pytest.approx(1 / 3)
    assert word_edit_distance("", "a b") == 1.0


# -- the gate on hand-built reports ------------------------------------------------------------

def _cond(name, kind, rates, base_rates=(0.0, 0.0, 0.0), edit=0.1, unparseable=0, identical=0.9):
    scopes = {}
    for s, r, b in zip(("in_scope", "near_scope", "out_of_scope"), rates, base_rates):
        scopes[s] = ScopeScore(n=10, hits=round(r * 10), rate=r, base_rate=b, excess=max(0.0, r - b),
                               unparseable=unparseable, changed=1 - identical, identical=identical, edit_distance=edit)
    return ConditionResult(name=name, kind=kind, scopes=scopes, answers={}, seconds=1.0)


def _report(adapter_rates, in_context=(0.6, 0.2, 0.0), base=(0.0, 0.0, 0.0), method="checks", **kw):
    conds = {"base": _cond("base", "base", base, base),
             "in_context": _cond("in_context", "in_context", in_context, base),
             "adapter": _cond("adapter", "adapter", adapter_rates, base, **kw)}
    return EvalReport(principle={"text": "t"}, method=method, comparison="at_least_baseline",
                      prompts={}, conditions=conds, candidate="adapter", max_new_tokens=8)


def test_gate_passes_a_scoped_adapter():
    passed, reasons = gate(_report((0.9, 0.0, 0.0)))
    assert passed and all(r.startswith("pass:") for r in reasons)


def test_gate_fails_below_in_context_and_on_overgeneralisation():
    passed, reasons = gate(_report((0.5, 0.0, 0.0), in_context=(0.8, 0.2, 0.0)))
    assert not passed and any("in-context 0.80" in r and r.startswith("fail") for r in reasons)
    passed, reasons = gate(_report((1.0, 1.0, 1.0)))  # plain DPO: the rule everywhere
    fails = [r for r in reasons if r.startswith("fail")]
    assert not passed and len(fails) == 2 and "near-scope" in fails[0] and "out-of-scope" in fails[1]
    # Within tolerance of in-context is enough.
    assert gate(_report((0.76, 0.0, 0.0), in_context=(0.8, 0.0, 0.0)), GateThresholds(adherence_tolerance=0.05))[0]
    assert not gate(_report((0.76, 0.0, 0.0), in_context=(0.8, 0.0, 0.0)))[0]  # by default: at least in-context's


def test_gate_fails_when_the_in_context_bar_was_not_measured():
    rep = _report((0.9, 0.0, 0.0), method="judge")
    rep.conditions["in_context"].scopes["in_scope"].rate = None  # every in-context verdict unparseable
    rep.conditions["in_context"].scopes["in_scope"].unparseable = 10
    passed, reasons = gate(rep)
    assert not passed and any("in-context adherence could not be measured" in r for r in reasons)
    assert any(r.startswith("fail: unparseable judge verdicts 10/90") for r in reasons)


def test_gate_limits_are_relative_to_the_base_model_unless_told_otherwise():
    rep = _report((0.9, 0.7, 0.7), base=(0.0, 0.7, 0.7))  # the base already shows the effect there
    assert gate(rep)[0]
    assert not gate(rep, GateThresholds(relative_to_base=False))[0]
    assert not gate(_report((0.9, 0.0, 0.0), edit=0.8), GateThresholds(max_out_of_scope_edit_distance=0.5))[0]
    assert not gate(_report((0.9, 0.0, 0.0)), candidate="missing")[0]


def test_gate_fails_an_adapter_that_rewrites_answers_outside_its_scope():
    # The marker kept out (0.00 out of scope) but every unrelated answer rewritten: C3PO's
    # constraint exists to leave those as the base model wrote them.
    passed, reasons = gate(_report((0.9, 0.0, 0.0), identical=0.1))
    assert not passed and "fail: out-of-scope answers identical to base 0.10 >= 0.80" in reasons
    assert gate(_report((0.9, 0.0, 0.0), identical=0.1), GateThresholds(min_identical_out_of_scope=None))[0]
    passed, reasons = gate(_report((0.9, 0.0, 0.0), identical=0.7), GateThresholds(min_identical_out_of_scope=0.6,
                                                                                   min_identical_near_scope=0.75))
    assert not passed and any(r.startswith("fail: near-scope answers identical") for r in reasons)


def test_a_peft_model_keeps_its_own_adapter(tiny_model_dir, model_cache, tmp_path):
    from peft import PeftModel

    from adapters.model import load_model

    loaded = load_model(str(tiny_model_dir), model_cache, device="cpu")
    served = PeftModel.from_pretrained(loaded.model, make_lora(tiny_model_dir, tmp_path / "served", seed=5),
                                       adapter_name="served")
    candidate = make_lora(tiny_model_dir, tmp_path / "candidate", seed=6)
    report = evaluate_adapter(served, loaded.tokenizer, candidate, GARDEN, PROMPTS, max_new_tokens=4)
    # Base rows ran with the served adapter switched off; afterwards it is active again, alone.
    assert report.conditions["adapter"].answers != report.conditions["base"].answers
    assert served.active_adapter == "served" and list(served.peft_config) == ["served"]
