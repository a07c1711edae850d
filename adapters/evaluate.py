"""Evaluating an adapter against its principle: adherence, overgeneralisation, drift, and a gate.

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

`gate(report, thresholds)` turns a report into a promotion decision with its reasons.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from statistics import mean
from typing import Literal, Sequence

from pydantic import BaseModel, Field

from policies.checks import Check, as_checks, compare_with_baseline, passes_all
from policies.scope import with_principles
from policies.teacher import StructuredFailure, ask_structured, is_capable

SCOPES = ("in_scope", "near_scope", "out_of_scope")
Comparison = Literal["at_least_baseline", "at_most_baseline"]
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


class ScopeScore(BaseModel):
    n: int
    hits: int | None = Field(None, description="answers showing the effect (None: nothing could measure it)")
    rate: float | None = Field(None, description="hits / answers judged")
    base_rate: float | None = Field(None, description="the base model's rate on the same prompts")
    excess: float | None = Field(None, description="rate - base_rate, floored at 0")
    unparseable: int = Field(0, description="judge verdicts that never parsed")
    vs_base: dict | None = Field(None, description="policies.checks.compare_with_baseline against the base answers")
    changed: float | None = Field(None, description="share of answers that differ from the base model's")
    edit_distance: float | None = Field(None, description="mean normalised word edit distance to the base answer")


class ConditionResult(BaseModel):
    name: str
    kind: Literal["base", "in_context", "adapter"]
    adapter_dir: str | None = None
    scopes: dict[str, ScopeScore]
    answers: dict[str, list[str]]
    effects: dict[str, list[bool | None]] = Field(default_factory=dict,
                                                  description="per answer: shows the effect (None: not measured)")
    seconds: float

    def rate(self, scope: str) -> float | None:
        return self.scopes[scope].rate


class EvalReport(BaseModel):
    principle: dict
    method: Literal["checks", "judge", "none"]
    comparison: Comparison
    judge: str | None = None
    judge_capable: bool = False
    ignored_judge: str | None = Field(None, description="a judge given but not capable, hence not used")
    prompts: dict[str, list[str]]
    conditions: dict[str, ConditionResult]
    candidate: str | None = Field(None, description="the condition the gate decides on")
    judge_failures: list[dict] = Field(default_factory=list)
    max_new_tokens: int
    created: float = Field(default_factory=time.time)

    def table(self) -> list[dict]:
        """One row per condition: the headline numbers."""
        rows = []
        for c in self.conditions.values():
            s = c.scopes
            rows.append({"condition": c.name, "adherence": s["in_scope"].rate, "near_scope": s["near_scope"].rate,
                         "out_of_scope": s["out_of_scope"].rate, "out_changed": s["out_of_scope"].changed,
                         "out_edit_distance": s["out_of_scope"].edit_distance,
                         "unparseable": sum(x.unparseable for x in s.values())})
        return rows

    def to_markdown(self, gate_result: tuple[bool, list[str]] | None = None) -> str:
        p = self.principle
        lines = [f"# Adapter evaluation: {p.get('text', '')}", "",
                 f"- domain: {p.get('domain', '')}", f"- effect: {p.get('effect', '')}",
                 f"- measured by: {self.method}" + (f" ({', '.join(p.get('checks_text', []))})" if self.method == "checks" else "")
                 + (f" ({self.judge}{'' if self.judge_capable else ', not a capable judge'})" if self.method == "judge" else "")
                 + (f" (judge {self.ignored_judge} ignored: not capable)" if self.ignored_judge else ""),
                 f"- comparison: {self.comparison}",
                 f"- prompts: {', '.join(f'{k} {len(v)}' for k, v in self.prompts.items())}; "
                 f"greedy, {self.max_new_tokens} new tokens", "",
                 "| condition | in-scope adherence | near-scope overgen. | out-of-scope overgen. | out-of-scope changed | out-of-scope edit dist. | unparseable |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.table():
            mark = " (candidate)" if r["condition"] == self.candidate else ""
            lines.append(f"| {r['condition']}{mark} | {_fmt(r['adherence'])} | {_fmt(r['near_scope'])} | "
                         f"{_fmt(r['out_of_scope'])} | {_fmt(r['out_changed'])} | {_fmt(r['out_edit_distance'])} | "
                         f"{r['unparseable']} |")
        lines += ["", "Overgeneralisation: the share of answers showing the effect where it does not belong; "
                  "adherence: the same share in scope. Changed / edit distance: against the base model's answer."]
        if gate_result is not None:
            passed, reasons = gate_result
            lines += ["", f"## Promotion gate: {'passed' if passed else 'failed'}", ""] + [f"- {r}" for r in reasons]
        if self.judge_failures:
            lines += ["", f"{len(self.judge_failures)} judge verdicts did not parse; see report.json."]
        lines += self._samples()
        return "\n".join(lines) + "\n"

    def _samples(self, per_scope: int = 10, chars: int = 90) -> list[str]:
        """A few prompts per scope with how the base model and the candidate begin their answers."""
        cand = self.conditions.get(self.candidate or "")
        if cand is None:
            return []
        base = self.conditions["base"]
        mark = {True: "yes", False: "no", None: "?"}
        clip = lambda t: " ".join(t.split())[:chars].replace("|", "\\|")  # noqa: E731
        lines = ["", "## Sample answers", "",
                 f"Effect = the candidate's answer shows the effect. Every answer is in report.json.", "",
                 "| scope | prompt | base answer begins | candidate answer begins | effect |", "|---|---|---|---|---|"]
        for scope in SCOPES:
            prompts = self.prompts.get(scope, [])
            for i, prompt in enumerate(prompts[:per_scope]):
                effect = cand.effects.get(scope, [None] * len(prompts))[i] if cand.effects.get(scope) else None
                lines.append(f"| {scope} | {clip(prompt)} | {clip(base.answers[scope][i])} | "
                             f"{clip(cand.answers[scope][i])} | {mark[effect]} |")
        return lines

    def plot(self, path: Path | str) -> None:
        """Grouped bars per condition: adherence, near-scope and out-of-scope overgeneralisation."""
        # The object API with the Agg canvas: no pyplot global state, safe inside a server.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        rows = self.table()
        fig = Figure(figsize=(max(5.0, 1.6 * len(rows) + 2), 4))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        width = 0.26
        for k, (key, label) in enumerate((("adherence", "in-scope adherence"), ("near_scope", "near-scope overgen."),
                                          ("out_of_scope", "out-of-scope overgen."))):
            xs = [i + (k - 1) * width for i in range(len(rows))]
            vals = [r[key] if r[key] is not None else 0.0 for r in rows]
            bars = ax.bar(xs, vals, width, label=label)
            ax.bar_label(bars, labels=[_fmt(r[key]) for r in rows], fontsize=7, padding=1)
        ax.set_xticks(range(len(rows)), [r["condition"] for r in rows])
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("share of answers showing the effect")
        ax.set_title(self.principle.get("text", "")[:90], fontsize=9)
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)

    def write(self, out_dir: Path | str, gate_result: tuple[bool, list[str]] | None = None) -> dict[str, Path]:
        """report.json, report.md and report.png in `out_dir`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "report.png"}
        data = self.model_dump()
        if gate_result is not None:
            data["gate"] = {"passed": gate_result[0], "reasons": gate_result[1]}
        paths["json"].write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        paths["md"].write_text(self.to_markdown(gate_result), encoding="utf-8")
        self.plot(paths["png"])
        return paths


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.2f}"


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
                        weak_judge_ok: bool = False, progress: bool = False) -> EvalReport:
    """Base, in-context and every adapter in `adapters` ({name: directory}) on the same prompts.

    `model` is the base model (a plain transformers model, or a PeftModel whose adapters are then
    switched off for the base rows); each adapter is loaded onto it with PEFT and removed again
    before returning. Not safe while the same model object serves requests. `prompts` is a dict
    or PromptSets with in_scope / near_scope / out_of_scope (use held-out prompts: a
    SynthesisResult's `eval_prompts`, not the prompts it trained on).

    A judge that is not capable (policies.teacher.is_capable: the small local model) is ignored
    unless `weak_judge_ok`: a 135M judge's verdicts would make the gate a coin toss. The report
    then says nothing measured the effect, and the gate fails.
    """
    from adapters.generate import generate

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

    def answer_all(system_rule: bool) -> tuple[dict[str, list[str]], float]:
        convs = [[{"role": "user", "content": p}] for _, p in order]
        if system_rule:
            convs = [with_principles(c, [rule]) for c in convs]
        start = time.perf_counter()
        flat = generate(model_ref[0], tokenizer, convs, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        progress=progress)
        out: dict[str, list[str]] = {s: [] for s in SCOPES}
        for (s, _), a in zip(order, flat):
            out[s].append(a)
        return out, time.perf_counter() - start

    from peft import PeftModel

    raw: dict[str, tuple[str, str | None, dict[str, list[str]], float]] = {}
    given_peft = isinstance(model, PeftModel)
    if given_peft:
        with model.disable_adapter():
            raw["base"] = ("base", None, *answer_all(False))
            raw["in_context"] = ("in_context", None, *answer_all(True))
    else:
        raw["base"] = ("base", None, *answer_all(False))
        raw["in_context"] = ("in_context", None, *answer_all(True))

    previous = model.active_adapter if given_peft else None
    wrapped = None
    try:
        for name, adapter_dir in (adapters or {}).items():
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
                score.edit_distance = mean(word_edit_distance(a, b) for a, b in zip(ans, base))
            scopes[s] = score
        conditions[name] = ConditionResult(name=name, kind=kind, adapter_dir=adapter_dir, scopes=scopes,
                                           answers=answers, effects=effects, seconds=round(seconds, 3))
    for c in conditions.values():
        for s in SCOPES:
            sc, b = c.scopes[s], conditions["base"].scopes[s]
            sc.base_rate = b.rate
            if sc.rate is not None and b.rate is not None:
                sc.excess = max(0.0, sc.rate - b.rate)

    from policies.checks import format_check

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

class GateThresholds(BaseModel):
    """When an adapter may become a candidate. Overgeneralisation limits apply to the excess over
    the base model's own rate by default (a base model that already writes no emojis should not
    count against an adapter about emojis)."""

    adherence_tolerance: float = Field(0.0, ge=0, description="adherence may trail in-context's by this much")
    min_adherence: float = Field(0.5, ge=0, le=1, description="adherence floor, whatever in-context scores")
    max_near_scope: float = Field(0.2, ge=0, le=1, description="near-scope overgeneralisation limit")
    max_out_of_scope: float = Field(0.1, ge=0, le=1, description="out-of-scope overgeneralisation limit")
    relative_to_base: bool = Field(True, description="limits apply to rate - base rate (else to the raw rate)")
    max_out_of_scope_edit_distance: float | None = Field(None, ge=0, le=1,
                                                         description="drift limit on out-of-scope answers (None: off)")
    max_unparseable: float = Field(0.1, ge=0, le=1, description="largest share of judge verdicts that may not parse")


def gate(report: EvalReport, thresholds: GateThresholds | None = None,
         candidate: str | None = None) -> tuple[bool, list[str]]:
    """(passed, reasons): one line per criterion, each starting with "pass:" or "fail:"."""
    t = thresholds or GateThresholds()
    name = candidate or report.candidate
    if name is None or name not in report.conditions:
        return False, [f"fail: no adapter condition {name!r} in the report"]
    cand = report.conditions[name]
    reasons: list[str] = []

    def check(ok: bool, text: str) -> None:
        reasons.append(("pass: " if ok else "fail: ") + text)

    if report.method == "none":
        why = (f"the judge {report.ignored_judge} is not capable enough" if report.ignored_judge
               else "no judge was given")
        check(False, f"nothing measured the effect: the principle has no checks and {why}")
        return False, reasons
    adherence = cand.rate("in_scope")
    in_context = report.conditions["in_context"].rate("in_scope") if "in_context" in report.conditions else None
    if adherence is None:
        check(False, "in-scope adherence could not be measured")
    else:
        check(adherence >= t.min_adherence, f"in-scope adherence {adherence:.2f} >= floor {t.min_adherence:.2f}")
        if in_context is None:  # the bar itself unmeasured (e.g. every judge verdict unparseable)
            check(False, "in-context adherence could not be measured, so there is nothing to compare with")
        else:
            check(adherence >= in_context - t.adherence_tolerance - 1e-9,
                  f"in-scope adherence {adherence:.2f} >= in-context {in_context:.2f}"
                  + (f" - {t.adherence_tolerance:.2f}" if t.adherence_tolerance else ""))
    for scope, limit in (("near_scope", t.max_near_scope), ("out_of_scope", t.max_out_of_scope)):
        sc = cand.scopes[scope]
        value = sc.excess if t.relative_to_base else sc.rate
        label = scope.replace("_", "-") + " overgeneralisation" + (" over base" if t.relative_to_base else "")
        if sc.n == 0:
            check(True, f"{label}: no prompts, not measured")
        elif value is None:
            check(False, f"{label} could not be measured")
        else:
            check(value <= limit + 1e-9, f"{label} {value:.2f} <= {limit:.2f}")
    if t.max_out_of_scope_edit_distance is not None:
        d = cand.scopes["out_of_scope"].edit_distance
        check(d is not None and d <= t.max_out_of_scope_edit_distance,
              f"out-of-scope drift (edit distance) {_fmt(d)} <= {t.max_out_of_scope_edit_distance:.2f}")
    if report.method == "judge":
        # Every condition's verdicts: the base and in-context ones set the bars the candidate meets.
        total = sum(s.n for c in report.conditions.values() for s in c.scopes.values())
        bad = sum(s.unparseable for c in report.conditions.values() for s in c.scopes.values())
        share = bad / total if total else 0.0
        check(share <= t.max_unparseable, f"unparseable judge verdicts {bad}/{total} ({share:.2f}) <= {t.max_unparseable:.2f}")
    return all(r.startswith("pass:") for r in reasons), reasons
