"""The distillation pipeline, with no store and no registry: principles -> C3PO data sets -> one LoRA
adapter -> an evaluation and a gate verdict per principle.

The refinement job (service.distill.job) runs it with the data sets it keeps on disk and the
versions it registers; bench/c3po.py runs the same functions on hand-written prompt sets.
Everything here takes the recipe (service.distill.recipe.Recipe) it runs with.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from adapters.evaluate import evaluate_conditions
from adapters.gate import gate
from adapters.report import EvalReport
from adapters.train import TrainResult, train
from policies.corpus import Corpus
from policies.scope import is_global
from policies.scope_model import ScopeModels
from policies.synthesis.templates import template_prompts
from policies.synthesis import GenerateBatchFn, PromptSets, SynthesisResult, synthesize, synthesize_from_prompts
from policies.text import last_user_text
from service.distill.recipe import Recipe


def corpus_prompts(principle, models: ScopeModels, evaluation: Corpus | None, positives: Sequence[str] = (),
                   n_eval: int = 10, seed: int = 0) -> tuple[PromptSets, PromptSets | None]:
    """(training requests, evaluation requests) of a principle from the built-in corpora.

    Training: the requests of the corpus topics the principle's scope model found inside its
    domain, those of its closest topics that the model keeps out (near scope), and requests of
    all other topics it keeps clearly out. Evaluation: the same from the evaluation corpus, which
    was written independently of the training one, by topic (so its in-scope requests do not
    depend on the scope model having judged them). A domain that names a person ("texts to my
    sister Priya") is evaluated on the corpus requests that point at that person, topped up to
    `n_eval` with the template generator's (the corpus's "text messages" are to anyone, and a
    version answers those with the base weights: measured, its gate read in-scope adherence 0.10
    on them while the candidate passed the rule on 63 % of real requests to Priya)."""
    domain = principle["domain"] if isinstance(principle, dict) else principle.domain
    rng = random.Random(seed)

    def sets(corpus: Corpus, n: int | None) -> PromptSets:
        prompts = list(corpus.prompts)
        if is_global(domain):
            rng.shuffle(prompts)
            return PromptSets(in_scope=prompts[: n or 200], near_scope=[], out_of_scope=[], generator="corpus")
        model = models.model(domain, positives)
        p = model.probability(corpus.vectors)
        inside = np.isin(corpus.topics, model.topics)
        near = np.isin(corpus.topics, model.near_topics) & (p < model.threshold)
        out = ~inside & ~np.isin(corpus.topics, model.near_topics) & (p < 0.2)
        pick = lambda mask: rng.sample([q for q, m in zip(prompts, mask) if m], k=min(int(mask.sum()), n or int(mask.sum())))  # noqa: E731
        in_sources = {corpus.name: int(inside.sum())}
        in_scope = pick(inside)
        if model.audience is not None and n is not None:
            in_scope = [q for q in in_scope if model.score(q, corpus.vectors[prompts.index(q)]) >= model.threshold]
            written = [q for q in template_prompts(domain, n, 0, seed)[0] if q not in in_scope][: max(0, n - len(in_scope))]
            in_sources = {corpus.name: len(in_scope), "templates": len(written)}
            in_scope += written
        return PromptSets(in_scope=in_scope, near_scope=pick(near), out_of_scope=pick(out),
                          categories=list(model.topics) + list(model.near_topics), generator="corpus",
                          sources={"in_scope": in_sources})

    train = sets(models.corpus, None)
    return train, (sets(evaluation, n_eval) if evaluation is not None else None)


def build_dataset(principle, generate_fn: GenerateBatchFn, teacher, logged_prompts: list[str], recipe: Recipe,
                  on_stage: Callable[[str], None] | None = None, prompt_sets: PromptSets | None = None,
                  corpus: PromptSets | None = None, eval_prompts: PromptSets | None = None,
                  scope_fn=None) -> SynthesisResult:
    """C3PO data for one principle: prompt sets, baseline answers from `generate_fn`, verified
    revisions, training rows; evaluation prompts from `eval_prompts` (an independent source) or
    else held out of the prompt sets. With `prompt_sets` (written elsewhere, e.g. a benchmark's
    training split) those are used as they are, none held out. `corpus`: see `corpus_prompts`;
    `scope_fn(domain, request)` splits logged traffic (the scope model's probability)."""
    if prompt_sets is not None:
        return synthesize_from_prompts(principle, prompt_sets, generate_fn, teacher, recipe.synthesis, on_stage)
    return synthesize(principle, generate_fn, teacher, logged_prompts, recipe.synthesis, scope_fn=scope_fn,
                      on_stage=on_stage, corpus=corpus, eval_prompts=eval_prompts)


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
                  cache_dir: Path, progress: bool = True, unpaired: list[dict] = (),
                  kto_weights: dict | None = None) -> TrainResult:
    """One LoRA adapter from the rows (no anchors when `constraints` is empty); `unpaired` answers
    train with KTO at `kto_weights` (service.distill.thumbs) unless the job's params set them."""
    cfg = recipe.train
    if kto_weights:
        cfg = replace(cfg, **kto_weights)
    return train(cfg, preferences, constraints, out_dir, cache_dir, progress=progress, unpaired=list(unpaired))


def evaluate(model, tokenizer, adapters: Mapping[str, Path | str], principle, prompts, recipe: Recipe, judge=None, *,
             candidate: str | None = None, comparison: str | None = None, max_new_tokens: int = 64,
             batch_size: int = 16, progress: bool = False, prompt_source: str | None = None,
             generate_fn=None, served=None) -> tuple[EvalReport, tuple[bool, list[str]]]:
    """The base model, in-context prompting and every adapter on `prompts` (held out from training),
    and the gate's verdict on `candidate` (default: the last adapter). `prompt_source` says in the
    report where the prompts came from. `generate_fn`: generate on the serving engine instead;
    `served(request)`: where the adapters answer as served (adapters.evaluate.evaluate_conditions)."""
    report = evaluate_conditions(model, tokenizer, principle, prompts, dict(adapters), judge, comparison=comparison,
                                 max_new_tokens=max_new_tokens, batch_size=batch_size, candidate=candidate,
                                 progress=progress, generate_fn=generate_fn, served=served)
    report.prompt_source = prompt_source
    verdict = gate(report, recipe.gate) if adapters else (False, ["fail: no adapter trained"])
    return report, verdict


def report_table(report: dict) -> list[dict]:
    """The headline rates of a written report (its report.json), one row per condition."""
    rows = []
    for name, cond in report["conditions"].items():
        scopes = cond["scopes"]
        rows.append({"condition": name, **{k: scopes[k]["rate"] for k in ("in_scope", "near_scope", "out_of_scope")}})
    return rows
