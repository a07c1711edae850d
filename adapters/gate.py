"""The promotion gate: does an evaluation report make an adapter a candidate, and why (not)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from adapters.report import EvalReport, fmt


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
    min_identical_out_of_scope: float | None = Field(0.8, ge=0, le=1, description="least share of out-of-scope "
                                                     "greedy answers identical to the base model's (None: off)")
    min_identical_near_scope: float | None = Field(None, ge=0, le=1, description="the same for near-scope "
                                                   "answers (None: off)")
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
    for scope, floor in (("near_scope", t.min_identical_near_scope), ("out_of_scope", t.min_identical_out_of_scope)):
        sc = cand.scopes[scope]
        if floor is None or sc.n == 0:
            continue
        check(sc.identical is not None and sc.identical >= floor - 1e-9,
              f"{scope.replace('_', '-')} answers identical to base {fmt(sc.identical)} >= {floor:.2f}")
    if t.max_out_of_scope_edit_distance is not None:
        d = cand.scopes["out_of_scope"].edit_distance
        check(d is not None and d <= t.max_out_of_scope_edit_distance,
              f"out-of-scope drift (edit distance) {fmt(d)} <= {t.max_out_of_scope_edit_distance:.2f}")
    if report.method == "judge":
        # Every condition's verdicts: the base and in-context ones set the bars the candidate meets.
        total = sum(s.n for c in report.conditions.values() for s in c.scopes.values())
        bad = sum(s.unparseable for c in report.conditions.values() for s in c.scopes.values())
        share = bad / total if total else 0.0
        check(share <= t.max_unparseable, f"unparseable judge verdicts {bad}/{total} ({share:.2f}) <= {t.max_unparseable:.2f}")
    return all(r.startswith("pass:") for r in reasons), reasons
