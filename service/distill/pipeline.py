"""The distillation pipeline, with no store and no registry: principles -> C3PO data sets -> one LoRA
adapter -> an evaluation and a gate verdict per principle.

The refinement job (service.distill.job) runs it with the data sets it keeps on disk and the
versions it registers; bench/c3po.py runs the same functions on hand-written prompt sets.
Everything here takes the recipe (service.distill.recipe.Recipe) it runs with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

from adapters.evaluate import evaluate_conditions
from adapters.gate import gate
from adapters.report import EvalReport
from adapters.train import TrainResult, train
from policies.synthesis import GenerateBatchFn, PromptSets, SynthesisResult, synthesize, synthesize_from_prompts
from policies.text import last_user_text
from service.distill.recipe import Recipe


def build_dataset(principle, generate_fn: GenerateBatchFn, teacher, logged_prompts: list[str], recipe: Recipe,
                  on_stage: Callable[[str], None] | None = None, prompt_sets: PromptSets | None = None) -> SynthesisResult:
    """C3PO data for one principle: prompt sets (some held out for its evaluation), baseline
    answers from `generate_fn`, verified revisions, training rows. With `prompt_sets` (written
    elsewhere, e.g. a benchmark's training split) those are used as they are, none held out."""
    if prompt_sets is not None:
        return synthesize_from_prompts(principle, prompt_sets, generate_fn, teacher, recipe.synthesis, on_stage)
    return synthesize(principle, generate_fn, teacher, logged_prompts, recipe.synthesis, on_stage=on_stage)


def training_rows(datasets: Mapping[str, SynthesisResult]) -> tuple[list[dict], list[dict]]:
    """(preference rows, constraint rows) of every data set, for one adapter that learns them all.

    No principle's held-out prompts may be among another's training rows: its
    overgeneralisation would be measured on prompts the adapter was trained on."""
    held_out = {q for d in datasets.values() if d.eval_prompts is not None
                for q in d.eval_prompts.in_scope + d.eval_prompts.near_scope + d.eval_prompts.out_of_scope}
    preferences = [row for d in datasets.values() for row in d.preferences if last_user_text(row["prompt"]) not in held_out]
    constraints = [row for d in datasets.values() for row in d.constraints if last_user_text(row["prompt"]) not in held_out]
    return preferences, constraints


def train_adapter(recipe: Recipe, preferences: list[dict], constraints: list[dict], out_dir: Path,
                  cache_dir: Path, progress: bool = True) -> TrainResult:
    """One LoRA adapter from the rows (plain DPO when `constraints` is empty)."""
    return train(recipe.train, preferences, constraints, out_dir, cache_dir, progress=progress)


def evaluate(model, tokenizer, adapters: Mapping[str, Path | str], principle, prompts, recipe: Recipe, judge=None, *,
             candidate: str | None = None, comparison: str | None = None, max_new_tokens: int = 64,
             batch_size: int = 16, progress: bool = False) -> tuple[EvalReport, tuple[bool, list[str]]]:
    """The base model, in-context prompting and every adapter on `prompts` (held out from training),
    and the gate's verdict on `candidate` (default: the last adapter)."""
    report = evaluate_conditions(model, tokenizer, principle, prompts, dict(adapters), judge, comparison=comparison,
                                 max_new_tokens=max_new_tokens, batch_size=batch_size, candidate=candidate,
                                 progress=progress)
    verdict = gate(report, recipe.gate) if adapters else (False, ["fail: no adapter trained"])
    return report, verdict


def report_table(report: dict) -> list[dict]:
    """The headline rates of a written report (its report.json), one row per condition."""
    rows = []
    for name, cond in report["conditions"].items():
        scopes = cond["scopes"]
        rows.append({"condition": name, **{k: scopes[k]["rate"] for k in ("in_scope", "near_scope", "out_of_scope")}})
    return rows
