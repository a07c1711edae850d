"""C3PO data synthesis for one principle: prompt sets, baseline answers, verified revisions, rows.

The steps, as in "RLVF: Learning from Verbal Feedback without Overgeneralization" (see
docs/background.md), with what this service adds:

1. `build_prompt_sets`: categories slightly wider than the principle's domain, then in-scope
   and near-scope prompts, from a capable teacher (structured answers; every unparseable
   answer is recorded as a failure and the loop goes on). Logged user prompts that fall in the
   domain join the in-scope set; logged prompts clearly outside it form the out-of-scope set,
   topped up from the built-in general pool. Without a capable teacher (None, or the small
   local model) the template generator of policies.synthesis.templates writes the in/near prompts.
2. `synthesize_from_prompts`: the served model answers every prompt (baseline) through a
   `generate_fn`, then revises its in-scope answers given the effect (or the teacher revises,
   when capable). Revisions are **verified**: with programmatic checks a failing revision is
   repaired where the check is constructive and dropped otherwise; a useless revision (empty,
   unchanged, or a stub such as just the marker) falls back to repairing the baseline itself,
   which for a `starts_with` rule is a perfect chosen answer. Without checks a capable teacher
   judges the revision; otherwise it is kept and flagged "unverified".
3. The result: preference rows (chosen = verified revision, rejected = baseline) and
   constraint rows (near-scope and out-of-scope baselines with their NLL weights) in the exact
   JSONL formats of `refinery train`, with counts, failures and a content hash.

`synthesize` runs both steps. A job that wants to resume between them can store the
`PromptSets` (a pydantic model) and call the second step later.
"""

from __future__ import annotations

from typing import Callable, Sequence

from langchain_core.language_models import BaseChatModel

from policies.checks import verify_revision
from policies.principles.model import principle_fields
from policies.synthesis.prompt_sets import build_prompt_sets
from policies.synthesis.records import (GenerateBatchFn, PromptSets, RevisionRecord, ScopeFn, SynthesisConfig,
                                        SynthesisResult, content_hash)
from policies.synthesis.revise import already_follows, revise_all, verify_revision_record
from policies.teacher import is_capable

def synthesize_from_prompts(principle, prompt_sets: PromptSets, generate_fn: GenerateBatchFn,
                            teacher: BaseChatModel | None = None, config: SynthesisConfig | None = None,
                            on_stage: Callable[[str], None] | None = None) -> SynthesisResult:
    """Baselines, revisions, verification and rows for prompt sets already built."""
    cfg = config or SynthesisConfig()
    f = principle_fields(principle)
    capable = teacher if is_capable(teacher) else None
    failures = list(prompt_sets.failures)
    stage = on_stage or (lambda s: None)

    stage("baselines")
    everything = prompt_sets.in_scope + prompt_sets.near_scope + prompt_sets.out_of_scope
    answers = generate_fn([[{"role": "user", "content": p}] for p in everything], cfg.max_new_tokens) if everything else []
    if len(answers) != len(everything):
        raise ValueError(f"generate_fn returned {len(answers)} answers for {len(everything)} prompts")
    base = dict(zip(everything, (a.strip() for a in answers)))

    stage("revisions")
    items = [(p, base[p]) for p in prompt_sets.in_scope]
    minimal: dict[str, RevisionRecord] = {}
    skip: set[str] = set()  # baselines that already pass: verify_revision_record drops them, no revision needed
    if f["checks"] and cfg.skip_passing_baselines:
        skip = {p for p, b in items if already_follows(f["checks"], b)}
    if cfg.prefer_minimal_edit and f["checks"]:
        for p, b in items:
            if p in skip:
                continue
            verdict, text = verify_revision(f["checks"], b, b)
            if verdict == "repaired":
                minimal[p] = RevisionRecord(prompt=p, baseline=b, revision=None, verdict="baseline_repaired",
                                            chosen=text, reason="minimal edit preferred")
    to_revise = [(p, b) for p, b in items if p not in minimal and p not in skip]
    revisor = capable if (capable is not None and cfg.teacher_revises) else None
    revised = revise_all(to_revise, f["effect"] or f["text"], generate_fn, revisor, cfg, failures) if to_revise else []
    by_prompt = dict(zip((p for p, _ in to_revise), revised))

    stage("verification")
    records = [minimal[p] if p in minimal else verify_revision_record(p, b, by_prompt.get(p), f, capable, cfg, failures)
               for p, b in items]
    preferences = [{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.baseline}
                   for r in records if r.chosen is not None and r.baseline]
    contrast = []
    if cfg.contrast_near and f["checks"]:
        for p in prompt_sets.near_scope:
            verdict, text = verify_revision(f["checks"], base[p], base[p]) if base[p] else ("dropped", None)
            if verdict == "repaired" and text.strip() != base[p]:
                contrast.append({"prompt": p, "chosen": base[p], "rejected": text})
    preferences += contrast
    budget = cfg.max_new_tokens  # a baseline that used it up was cut, and is not closed in training
    constraints = ([{"prompt": p, "completion": base[p], "weight": cfg.near_weight, "max_tokens": budget}
                    for p in prompt_sets.near_scope if base[p]]
                   + [{"prompt": p, "completion": base[p], "weight": cfg.out_weight, "max_tokens": budget}
                      for p in prompt_sets.out_of_scope if base[p]])
    counts = {v: sum(r.verdict == v for r in records)
              for v in ("kept", "repaired", "baseline_repaired", "unverified", "dropped")}
    counts.update(in_scope=len(prompt_sets.in_scope), near_scope=len(prompt_sets.near_scope),
                  out_of_scope=len(prompt_sets.out_of_scope), preference_rows=len(preferences),
                  constraint_rows=len(constraints), contrast_rows=len(contrast), failures=len(failures))
    return SynthesisResult(
        principle={"text": f["text"], "domain": f["domain"], "effect": f["effect"],
                   "checks": [c.model_dump() for c in f["checks"]]},
        prompts=prompt_sets, preferences=preferences, constraints=constraints, revisions=records,
        counts=counts, failures=failures, content_hash=content_hash(preferences, constraints), config=cfg)


def split_for_eval(sets: PromptSets, n_eval: int) -> tuple[PromptSets, PromptSets]:
    """(training, held-out) sets: the last `n_eval` prompts of each scope, at most half of it, are
    held out. Logged prompts come first in a scope, so they stay on the training side."""
    train, held = {}, {}
    for scope in ("in_scope", "near_scope", "out_of_scope"):
        prompts = getattr(sets, scope)
        k = min(n_eval, len(prompts) // 2)
        train[scope], held[scope] = prompts[: len(prompts) - k], prompts[len(prompts) - k:]
    meta = {"categories": sets.categories, "generator": sets.generator}
    return (PromptSets(**train, **meta, sources=sets.sources, failures=sets.failures),
            PromptSets(**held, **meta))


def synthesize(principle, generate_fn: GenerateBatchFn, teacher: BaseChatModel | None = None,
               logged_prompts: Sequence[str] = (), config: SynthesisConfig | None = None,
               scope_fn: ScopeFn | None = None, on_stage: Callable[[str], None] | None = None,
               corpus: PromptSets | None = None, eval_prompts: PromptSets | None = None) -> SynthesisResult:
    """Prompt sets, then baselines, verified revisions and training rows, for one principle.

    The evaluation's prompts are `eval_prompts` when given (from a source independent of the
    training prompts: policies.corpus' evaluation corpus); otherwise `n_eval` per scope are held
    out of the prompt sets, which then come from the same generator as the training prompts."""
    cfg = config or SynthesisConfig()
    if on_stage:
        on_stage("prompts")
    if eval_prompts is not None:
        train_sets = build_prompt_sets(principle, teacher, logged_prompts, cfg, scope_fn, corpus)
        eval_sets = eval_prompts
    else:
        wide = cfg.model_copy(update={"n_in_scope": cfg.n_in_scope + cfg.n_eval,
                                      "n_near_scope": cfg.n_near_scope + cfg.n_eval,
                                      "n_out_of_scope": cfg.n_out_of_scope + cfg.n_eval})
        sets = build_prompt_sets(principle, teacher, logged_prompts, wide, scope_fn, corpus)
        train_sets, eval_sets = split_for_eval(sets, cfg.n_eval)
    result = synthesize_from_prompts(principle, train_sets, generate_fn, teacher, cfg, on_stage)
    return result.model_copy(update={"eval_prompts": eval_sets})
