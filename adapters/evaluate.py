"""Evaluating an adapter against its principle: adherence, overgeneralisation and drift.

For one principle and three prompt sets (in-scope, near-scope, out-of-scope), every condition
answers every prompt, greedily:
- `base`: the base model;
- `in_context`: the base model with the principle in the system prompt, exactly as the
  serving fast path adds it (policies.scope.with_principles), and unscoped, as in C3PO;
- one row per adapter: the LoRA adapter loaded with PEFT onto the *same* base model (no second
  copy of the weights), removed again afterwards.

Per condition and scope, the share of answers showing the effect: in scope that is adherence,
near and out of scope it is overgeneralisation. It is measured with the principle's
programmatic checks where it has them (policies.checks; the `comparison` of the feedback
decides what "showing the effect" means for `length`) and by a judge LLM otherwise; a verdict
that does not parse is counted and reported, never dropped in silence. Drift: how far each
answer moved from the base model's answer to the same prompt (share changed, mean normalised
word edit distance), most telling on out-of-scope prompts.

The result is an adapters.report.EvalReport; adapters.gate turns it into a promotion decision.
"""

from __future__ import annotations

import time
from pathlib import Path
from statistics import mean
from typing import Callable, Sequence

from pydantic import BaseModel

from adapters.generate import generate
from adapters.report import SCOPES, Comparison, ConditionResult, EvalReport, ScopeScore
from policies.checks import Check, as_checks, compare_with_baseline, format_check, passes_all
from policies.scope import with_principles
from policies.teacher import StructuredFailure, ask_structured, is_capable

# For `at_most_baseline` (a concision rule) an answer shows the effect when it is at least this
# much shorter than the base answer: a base answer is never shorter than itself, and a few
# characters of float noise are not concision.
SHORTER_BY = 0.1


class JudgeVerdict(BaseModel):
    shows_effect: bool


JUDGE_PROMPT = """Does the answer below show this property: {effect}?
Judge only the property, not whether the answer is good or whether the property fits the request.

Request: {prompt}

Answer: {answer}

Answer with only JSON: {{"shows_effect": true}} or {{"shows_effect": false}}"""


# -- measuring ---------------------------------------------------------------------------------

def word_edit_distance(a: str, b: str) -> float:
    """Levenshtein distance over words divided by the longer length: 0 same, 1 nothing shared."""
    x, y = a.split(), b.split()
    if not x and not y:
        return 0.0
    prev = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        cur = [i] + [0] * len(y)
        for j, wy in enumerate(y, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wx != wy))
        prev = cur
    return prev[-1] / max(len(x), len(y))


def default_comparison(checks: Sequence[Check]) -> Comparison:
    """A `length` check without a value compares with the baseline: concision, at most as long."""
    return "at_most_baseline" if any(c.metric == "length" and c.value is None for c in checks) else "at_least_baseline"


def effect_present(checks: Sequence[Check], answer: str, base_answer: str, comparison: Comparison) -> bool:
    """Does `answer` show the effect the checks describe? `base_answer` is the base model's answer
    to the same prompt (what `length` and `at_most_baseline` compare with)."""
    if comparison == "at_most_baseline":
        return passes_all(checks, answer, base_answer) and len(answer.strip()) <= (1 - SHORTER_BY) * len(base_answer.strip())
    return passes_all(checks, answer, base_answer)


def _judge_all(judge, effect: str, prompts: list[str], answers: list[str], failures: list[dict],
               condition: str, scope: str, retries: int) -> list[bool | None]:
    out: list[bool | None] = []
    for prompt, answer in zip(prompts, answers):
        try:
            v = ask_structured(judge, JUDGE_PROMPT.format(effect=effect, prompt=prompt, answer=answer),
                               JudgeVerdict, retries=retries)
            out.append(v.shows_effect)
        except StructuredFailure as exc:
            failures.append({"condition": condition, "scope": scope, "prompt": prompt,
                             "raw": [r[:500] for r in exc.raw], "errors": exc.errors})
            out.append(None)
    return out


def _score(verdicts: list[bool | None] | None, n: int) -> ScopeScore:
    if verdicts is None:
        return ScopeScore(n=n)
    judged = [v for v in verdicts if v is not None]
    hits = sum(judged)
    return ScopeScore(n=n, hits=hits, rate=hits / len(judged) if judged else None,
                      unparseable=len(verdicts) - len(judged))


def _fields(principle) -> dict:
    get = principle.get if isinstance(principle, dict) else (lambda k, d=None: getattr(principle, k, d))
    checks = as_checks(get("checks", None) or [])
    return {"text": get("text", "") or "", "domain": get("domain", "") or "", "effect": get("effect", "") or "",
            "checks": checks}


def _prompt_sets(prompts) -> dict[str, list[str]]:
    get = prompts.get if isinstance(prompts, dict) else (lambda k, d=None: getattr(prompts, k, d))
    return {s: list(get(s, None) or []) for s in SCOPES}


def evaluate_conditions(model, tokenizer, principle, prompts, adapters: dict[str, Path | str] | None = None,
                        judge=None, *, comparison: Comparison | None = None, max_new_tokens: int = 64,
                        batch_size: int = 16, candidate: str | None = None, judge_retries: int = 1,
                        weak_judge_ok: bool = False, progress: bool = False, generate_fn=None,
                        served: Callable[[str], bool] | None = None) -> EvalReport:
    """Base, in-context and every adapter in `adapters` ({name: directory}) on the same prompts.

    `model` is the base model (a plain transformers model, or a PeftModel whose adapters are then
    switched off for the base rows); each adapter is loaded onto it with PEFT and removed again
    before returning. Not safe while the same model object serves requests. `prompts` is a dict
    or PromptSets with in_scope / near_scope / out_of_scope (use held-out prompts: a
    SynthesisResult's `eval_prompts`, not the prompts it trained on).

    A judge that is not capable (policies.teacher.is_capable: the small local model) is ignored
    unless `weak_judge_ok`: a 135M judge's verdicts would make the gate a coin toss. The report
    then says nothing measured the effect, and the gate fails.

    `generate_fn(conversations, max_new_tokens, adapter_dir or None) -> answers` generates
    somewhere else instead (an engine that loads the adapter itself, such as vLLM); `model` is
    then not used.

    `served(request) -> bool` is where a version's adapter answers when served (its scope,
    policies.adapter_scope): each adapter row then answers as served (the base answer elsewhere;
    `applied` says on what share), and a row "<name> everywhere" keeps the adapter's own answers.
    """
    f = _fields(principle)
    ignored_judge = None
    if judge is not None and not is_capable(judge) and not weak_judge_ok:
        ignored_judge, judge = type(judge).__name__, None
    sets = _prompt_sets(prompts)
    checks = f["checks"]
    comparison = comparison or default_comparison(checks)
    method = "checks" if checks else ("judge" if judge is not None else "none")
    order = [(s, p) for s in SCOPES for p in sets[s]]
    rule = {"text": f["text"]}
    # The model generating right now: the base, then the PEFT wrapper once an adapter is on.
    model_ref = [model]

    def answer_all(system_rule: bool, adapter_dir=None) -> tuple[dict[str, list[str]], float]:
        convs = [[{"role": "user", "content": p}] for _, p in order]
        if system_rule:
            convs = [with_principles(c, [rule]) for c in convs]
        start = time.perf_counter()
        if generate_fn is not None:
            flat = generate_fn(convs, max_new_tokens, adapter_dir)
        else:
            flat = generate(model_ref[0], tokenizer, convs, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            progress=progress)
        out: dict[str, list[str]] = {s: [] for s in SCOPES}
        for (s, _), a in zip(order, flat):
            out[s].append(a)
        return out, time.perf_counter() - start

    from peft import PeftModel

    raw: dict[str, tuple[str, str | None, dict[str, list[str]], float]] = {}
    if generate_fn is not None:
        raw["base"] = ("base", None, *answer_all(False))
        raw["in_context"] = ("in_context", None, *answer_all(True))
        for name, adapter_dir in (adapters or {}).items():
            raw[name] = ("adapter", str(adapter_dir), *answer_all(False, adapter_dir))
    given_peft = isinstance(model, PeftModel)
    if generate_fn is not None:
        pass
    elif given_peft:
        with model.disable_adapter():
            raw["base"] = ("base", None, *answer_all(False))
            raw["in_context"] = ("in_context", None, *answer_all(True))
    else:
        raw["base"] = ("base", None, *answer_all(False))
        raw["in_context"] = ("in_context", None, *answer_all(True))

    previous = model.active_adapter if given_peft else None
    wrapped = None
    try:
        for name, adapter_dir in ({} if generate_fn is not None else adapters or {}).items():
            load_name = f"eval-{name}"
            if given_peft:
                model.load_adapter(str(adapter_dir), adapter_name=load_name)
                model.set_adapter(load_name)
            elif wrapped is None:
                wrapped = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=load_name)
                wrapped.eval()
                model_ref[0] = wrapped
            else:
                wrapped.load_adapter(str(adapter_dir), adapter_name=load_name)
                wrapped.set_adapter(load_name)
            raw[name] = ("adapter", str(adapter_dir), *answer_all(False))
    finally:
        if given_peft:
            for name in adapters or {}:
                if f"eval-{name}" in model.peft_config:
                    model.delete_adapter(f"eval-{name}")
            if previous is not None and previous in model.peft_config:
                model.set_adapter(previous)
        elif wrapped is not None:
            wrapped.unload()  # the LoRA layers come out; `model` is the plain base model again

    base_answers = raw["base"][2]
    applied: dict[str, dict[str, float]] = {}
    if served is not None:
        inside = {s: [bool(served(q)) for q in sets[s]] for s in SCOPES}
        for name in [n for n, r in raw.items() if r[0] == "adapter"]:
            kind, adapter_dir, answers, seconds = raw[name]
            raw[f"{name} everywhere"] = raw.pop(name)
            raw[name] = (kind, adapter_dir, {s: [a if ok else b for a, b, ok in zip(answers[s], base_answers[s], inside[s])]
                                             for s in SCOPES}, seconds)
            applied[name] = {s: mean(inside[s]) if inside[s] else None for s in SCOPES}
    failures: list[dict] = []
    conditions: dict[str, ConditionResult] = {}
    for name, (kind, adapter_dir, answers, seconds) in raw.items():
        scopes, effects = {}, {}
        for s in SCOPES:
            ans, base = answers[s], base_answers[s]
            if checks:
                verdicts = [effect_present(checks, a, b, comparison) for a, b in zip(ans, base)]
            elif judge is not None:
                verdicts = _judge_all(judge, f["effect"] or f["text"], sets[s], ans, failures, name, s, judge_retries)
            else:
                verdicts = None
            score = _score(verdicts, len(ans))
            effects[s] = list(verdicts) if verdicts is not None else [None] * len(ans)
            if checks and ans:
                score.vs_base = compare_with_baseline(checks, ans, base, comparison)
            if ans:
                score.changed = mean(a.strip() != b.strip() for a, b in zip(ans, base))
                score.identical = 1.0 - score.changed
                score.edit_distance = mean(word_edit_distance(a, b) for a, b in zip(ans, base))
            if name in applied:
                score.applied = applied[name][s]
            scopes[s] = score
        conditions[name] = ConditionResult(name=name, kind=kind, adapter_dir=adapter_dir, scopes=scopes,
                                           answers=answers, effects=effects, seconds=round(seconds, 3))
    for c in conditions.values():
        for s in SCOPES:
            sc, b = c.scopes[s], conditions["base"].scopes[s]
            sc.base_rate = b.rate
            if sc.rate is not None and b.rate is not None:
                sc.excess = max(0.0, sc.rate - b.rate)

    principle_out = {"text": f["text"], "domain": f["domain"], "effect": f["effect"],
                     "checks": [c.model_dump() for c in checks], "checks_text": [format_check(c) for c in checks]}
    if candidate is None and adapters:
        candidate = next(iter(adapters)) if len(adapters) == 1 else list(adapters)[-1]
    return EvalReport(principle=principle_out, method=method, comparison=comparison,
                      judge=type(judge).__name__ if judge is not None else None, judge_capable=is_capable(judge),
                      ignored_judge=ignored_judge,
                      prompts=sets, conditions=conditions, candidate=candidate, judge_failures=failures,
                      max_new_tokens=max_new_tokens)


def evaluate_adapter(model, tokenizer, adapter_dir: Path | str, principle, prompts, judge=None, *,
                     comparison: Comparison | None = None, max_new_tokens: int = 64, batch_size: int = 16,
                     weak_judge_ok: bool = False, progress: bool = False) -> EvalReport:
    """One adapter beside the base model and in-context prompting; the adapter row is named "adapter"."""
    return evaluate_conditions(model, tokenizer, principle, prompts, {"adapter": adapter_dir}, judge,
                               comparison=comparison, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               candidate="adapter", weak_judge_ok=weak_judge_ok, progress=progress)


# -- the promotion gate ------------------------------------------------------------------------
