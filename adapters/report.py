"""The evaluation report of an adapter against its principle: scores per condition and scope,
every answer and verdict, a markdown summary with sample answers, and a plot.

Written by adapters.evaluate, judged by adapters.gate, kept with each registered version.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

SCOPES = ("in_scope", "near_scope", "out_of_scope")
Comparison = Literal["at_least_baseline", "at_most_baseline"]


class ScopeScore(BaseModel):
    n: int
    hits: int | None = Field(None, description="answers showing the effect (None: nothing could measure it)")
    rate: float | None = Field(None, description="hits / answers judged")
    base_rate: float | None = Field(None, description="the base model's rate on the same prompts")
    excess: float | None = Field(None, description="rate - base_rate, floored at 0")
    unparseable: int = Field(0, description="judge verdicts that never parsed")
    vs_base: dict | None = Field(None, description="policies.checks.compare_with_baseline against the base answers")
    changed: float | None = Field(None, description="share of answers that differ from the base model's")
    identical: float | None = Field(None, description="share of greedy answers identical to the base model's "
                                    "(1 - changed): what a constraint exists to keep")
    edit_distance: float | None = Field(None, description="mean normalised word edit distance to the base answer")
    applied: float | None = Field(None, description="share of prompts the adapter answered as served (inside its "
                                  "version's scope; None: judged everywhere)")


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
    prompt_source: str | None = Field(None, description="where the prompts came from, and whether that is "
                                      "independent of the training prompts")
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
                         "near_identical": s["near_scope"].identical, "out_identical": s["out_of_scope"].identical,
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
                 f"greedy, {self.max_new_tokens} new tokens"
                 + (f"; from {self.prompt_source}" if self.prompt_source else ""), "",
                 "| condition | in-scope adherence | near-scope overgen. | out-of-scope overgen. | near-scope identical to base | out-of-scope identical to base | out-of-scope edit dist. | unparseable |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in self.table():
            mark = " (candidate)" if r["condition"] == self.candidate else ""
            lines.append(f"| {r['condition']}{mark} | {fmt(r['adherence'])} | {fmt(r['near_scope'])} | "
                         f"{fmt(r['out_of_scope'])} | {fmt(r['near_identical'])} | {fmt(r['out_identical'])} | "
                         f"{fmt(r['out_edit_distance'])} | "
                         f"{r['unparseable']} |")
        lines += ["", "Overgeneralisation: the share of answers showing the effect where it does not belong; "
                  "adherence: the same share in scope. Identical / edit distance: against the base model's greedy answer."]
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
                 "Effect = the candidate's answer shows the effect. Every answer is in report.json.", "",
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
            ax.bar_label(bars, labels=[fmt(r[key]) for r in rows], fontsize=7, padding=1)
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


def fmt(x) -> str:
    return "–" if x is None else f"{x:.2f}"
