"""C3PO data synthesis for one principle: prompt sets, baseline answers, verified revisions, rows.

The steps, as in "RLVF: Learning from Verbal Feedback without Overgeneralization" (see
docs/background.md), with what this service adds:

1. `build_prompt_sets`: categories slightly wider than the principle's domain, then in-scope
   and near-scope prompts, from a capable teacher (structured answers; every unparseable
   answer is recorded as a failure and the loop goes on). Logged user prompts that fall in the
   domain join the in-scope set; logged prompts clearly outside it form the out-of-scope set,
   topped up from the built-in general pool. Without a capable teacher (None, or the small
   local model) the template generator of policies.prompt_pool writes the in/near prompts.
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

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Callable, Literal, Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from policies.checks import Check, as_checks, passes_all, verify_revision
from policies.prompt_pool import pool_prompts, template_categories, template_prompts
from policies.scope import lexical_score
from policies.teacher import StructuredFailure, ask_structured, is_capable

# The served model, batched: a list of OpenAI-style message lists and a token budget in, one
# answer per conversation out (adapters.generate.generate or the engine fit behind a lambda).
GenerateBatchFn = Callable[[list[list[dict]], int], list[str]]
# (domain, prompt) -> a score in 0..1 (policies.scope.lexical_score) or a bool (ScopeMatcher.in_scope).
ScopeFn = Callable[[str, str], "float | bool"]

Verdict = Literal["kept", "repaired", "baseline_repaired", "unverified", "dropped"]


class SynthesisConfig(BaseModel):
    """Sizes and knobs of one synthesis; the defaults make the CPU refinement job a few minutes."""

    n_in_scope: int = Field(20, ge=1, description="in-scope prompts (one preference pair each at most)")
    n_near_scope: int = Field(20, ge=0, description="near-scope prompts (constraint rows)")
    n_out_of_scope: int = Field(20, ge=0, description="out-of-scope prompts (constraint rows)")
    n_eval: int = Field(10, ge=0, description="per scope, prompts `synthesize` holds out for evaluation "
                        "(never in the rows); at most half of what a scope got")
    n_categories: int = Field(10, ge=1, description="categories the teacher is asked for")
    prompts_per_category: int = Field(4, ge=1, description="in-scope and near-scope prompts asked per category")
    logged_in_scope_share: float = Field(0.5, ge=0, le=1, description="at most this share of in-scope prompts "
                                         "from logged traffic (the rest from the teacher or templates)")
    in_scope_threshold: float = Field(0.5, description="scope score from which a logged prompt is in scope")
    out_of_scope_threshold: float = Field(0.2, description="scope score below which a logged or pool prompt "
                                          "is out of scope; the band between is left out as ambiguous")
    near_weight: float = Field(0.1, ge=0, description="NLL weight of near-scope constraint rows")
    out_weight: float = Field(0.2, ge=0, description="NLL weight of out-of-scope constraint rows")
    max_new_tokens: int = Field(64, ge=1, description="token budget of baseline answers")
    revision_extra_tokens: int = Field(16, ge=0, description="extra budget of a revision (room for a marker)")
    min_revision_ratio: float = Field(0.25, ge=0, description="a revision shorter than this share of the "
                                      "baseline (markers removed) is a stub; not applied to concision rules")
    prefer_minimal_edit: bool = Field(False, description="with checks, take the repaired baseline as the chosen "
                                      "answer whenever the checks can repair it, and ask for a revision only "
                                      "where they cannot: chosen and rejected then differ by the rule alone")
    contrast_near: bool = Field(False, description="with constructive checks, each near-scope prompt also gives a "
                                "pair: its baseline over the baseline with the rule applied, so DPO learns where "
                                "the rule stops as sharply as where it applies")
    skip_passing_baselines: bool = Field(True, description="drop a pair whose baseline already passes the checks: "
                                         "it teaches a rephrasing, not the rule")
    keep_unverified: bool = Field(True, description="keep revisions nothing could verify (no checks, no "
                                  "capable teacher), flagged 'unverified'")
    teacher_revises: bool = Field(True, description="a capable teacher writes the revisions instead of the model")
    retries: int = Field(2, ge=0, description="re-asks of the teacher after an unparseable answer")
    seed: int = 0


class SynthesisFailure(BaseModel):
    """A teacher answer that never parsed (or an LLM call that raised). Kept, never dropped."""

    task: str
    ref: str
    schema_name: str
    raw: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)

    @classmethod
    def from_structured(cls, exc: StructuredFailure, task: str, ref: str) -> "SynthesisFailure":
        return cls(task=task, ref=ref, schema_name=exc.schema, raw=list(exc.raw), errors=list(exc.errors))


class PromptSets(BaseModel):
    in_scope: list[str]
    near_scope: list[str]
    out_of_scope: list[str]
    categories: list[str] = Field(default_factory=list)
    generator: Literal["teacher", "templates"] = "templates"
    sources: dict[str, dict[str, int]] = Field(default_factory=dict, description="set -> origin -> count")
    failures: list[SynthesisFailure] = Field(default_factory=list)


class RevisionRecord(BaseModel):
    """What happened to one in-scope prompt: the pair it became, or why it was dropped."""

    prompt: str
    baseline: str
    revision: str | None
    verdict: Verdict
    chosen: str | None = None
    reason: str = ""


class SynthesisResult(BaseModel):
    principle: dict
    prompts: PromptSets = Field(description="the prompts the rows were made from")
    eval_prompts: PromptSets | None = Field(None, description="held-out prompts for adapters.evaluate")
    preferences: list[dict] = Field(description='rows {"prompt", "chosen", "rejected"} of `refinery train`')
    constraints: list[dict] = Field(description='rows {"prompt", "completion", "weight"} of `refinery train`')
    revisions: list[RevisionRecord]
    counts: dict[str, int]
    failures: list[SynthesisFailure]
    content_hash: str
    config: SynthesisConfig

    def write(self, out_dir: Path | str) -> dict[str, Path]:
        """preferences.jsonl and constraints.jsonl (for `refinery train`), prompts.json, synthesis.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"preferences": out / "preferences.jsonl", "constraints": out / "constraints.jsonl",
                 "prompts": out / "prompts.json", "synthesis": out / "synthesis.json"}
        for key in ("preferences", "constraints"):
            with open(paths[key], "w", encoding="utf-8") as f:
                for row in getattr(self, key):
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        paths["prompts"].write_text(self.prompts.model_dump_json(indent=1) + "\n", encoding="utf-8")
        if self.eval_prompts is not None:
            paths["eval_prompts"] = out / "eval_prompts.json"
            paths["eval_prompts"].write_text(self.eval_prompts.model_dump_json(indent=1) + "\n", encoding="utf-8")
        paths["synthesis"].write_text(self.model_dump_json(indent=1) + "\n", encoding="utf-8")
        return paths


def content_hash(preferences: Sequence[dict], constraints: Sequence[dict]) -> str:
    """sha256 of the canonical JSON of the rows: same data, same hash, whatever the key order."""
    canon = json.dumps({"preferences": list(preferences), "constraints": list(constraints)},
                       sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def _fields(principle) -> dict:
    """text/domain/effect/checks of a Principle, a dict, or any object carrying them."""
    get = principle.get if isinstance(principle, dict) else (lambda k, d=None: getattr(principle, k, d))
    return {"text": get("text", "") or "", "domain": get("domain", "") or "", "effect": get("effect", "") or "",
            "checks": as_checks(get("checks", None) or [])}


# -- 1. prompt sets ---------------------------------------------------------------------------

class Categories(BaseModel):
    categories: list[str] = Field(min_length=1)


class CategoryPrompts(BaseModel):
    in_scope: list[str]
    near_scope: list[str]


CATEGORIES_PROMPT = """A user gave a chatbot this feedback: "{text}"
It applies to: {domain}. What should change: {effect}.
List {n} categories of user requests that are slightly wider than this domain: each category must
hold both requests inside the domain and similar requests outside it.
Answer with only JSON: {{"categories": ["...", "..."]}}"""

CATEGORY_PROMPTS_PROMPT = """Domain of a chatbot rule: {domain}
Category: {category}
Write {k} varied requests a user might type to a chatbot that belong to this category and clearly
fall INSIDE the domain, and {k} requests of the same category that are clearly OUTSIDE the domain.
Each request stands alone; do not mention the rule.
Answer with only JSON: {{"in_scope": ["..."], "near_scope": ["..."]}}"""


def _clean_prompts(items: Sequence[str]) -> list[str]:
    return [" ".join(p.split()) for p in items if isinstance(p, str) and len(p.split()) >= 2]


def _dedupe(items: Sequence[str], taken: set[str]) -> list[str]:
    out = []
    for p in items:
        key = p.strip().lower()
        if key and key not in taken:
            taken.add(key)
            out.append(p.strip())
    return out


def _teacher_prompts(f: dict, teacher: BaseChatModel, n_in: int, n_near: int, cfg: SynthesisConfig,
                     failures: list[SynthesisFailure]) -> tuple[list[str], list[str], list[str]]:
    """(categories, in-scope, near-scope) from the teacher; failures appended, never raised."""
    try:
        cats = ask_structured(teacher, CATEGORIES_PROMPT.format(n=cfg.n_categories, **f), Categories,
                              retries=cfg.retries).categories
    except StructuredFailure as exc:
        failures.append(SynthesisFailure.from_structured(exc, "categories", f["domain"]))
        return [], [], []
    cats = [" ".join(c.split()) for c in cats if isinstance(c, str) and c.strip()][: cfg.n_categories]
    ins: list[str] = []
    near: list[str] = []
    for cat in cats:
        if len(ins) >= n_in and len(near) >= n_near:
            break
        try:
            got = ask_structured(teacher, CATEGORY_PROMPTS_PROMPT.format(domain=f["domain"], category=cat,
                                                                          k=cfg.prompts_per_category),
                                 CategoryPrompts, retries=cfg.retries)
        except StructuredFailure as exc:
            failures.append(SynthesisFailure.from_structured(exc, "category_prompts", cat))
            continue
        ins += _clean_prompts(got.in_scope)
        near += _clean_prompts(got.near_scope)
    return cats, ins, near


def build_prompt_sets(principle, teacher: BaseChatModel | None = None, logged_prompts: Sequence[str] = (),
                      config: SynthesisConfig | None = None, scope_fn: ScopeFn | None = None) -> PromptSets:
    """In-scope, near-scope and out-of-scope prompts for one principle.

    `logged_prompts` are user prompts from the service's traffic; `scope_fn(domain, prompt)` splits
    them (default policies.scope.lexical_score: >= in_scope_threshold is in, < out_of_scope_threshold
    is out, the band between is left out). A lexical scorer misses in-domain prompts that do not
    name the domain; pass a ScopeMatcher's `in_scope` for a teacher-backed split.
    """
    cfg = config or SynthesisConfig()
    scope_fn = scope_fn or lexical_score
    f = _fields(principle)
    rng = random.Random(cfg.seed)
    failures: list[SynthesisFailure] = []
    taken: set[str] = set()

    logged = _dedupe([" ".join(p.split()) for p in logged_prompts if isinstance(p, str) and p.strip()], set())
    scores = {p: float(scope_fn(f["domain"], p)) for p in logged}
    logged_in = [p for p in logged if scores[p] >= cfg.in_scope_threshold]
    logged_out = [p for p in logged if scores[p] < cfg.out_of_scope_threshold]
    rng.shuffle(logged_in)
    rng.shuffle(logged_out)

    n_logged_in = min(len(logged_in), int(cfg.n_in_scope * cfg.logged_in_scope_share))
    in_scope = _dedupe(logged_in[:n_logged_in], taken)
    sources = {"in_scope": {"logged": len(in_scope)}, "near_scope": {}, "out_of_scope": {}}
    need_in = cfg.n_in_scope - len(in_scope)

    generator: Literal["teacher", "templates"] = "teacher" if is_capable(teacher) else "templates"
    cats: list[str] = []
    gen_in: list[str] = []
    gen_near: list[str] = []
    if generator == "teacher":
        cats, gen_in, gen_near = _teacher_prompts(f, teacher, need_in, cfg.n_near_scope, cfg, failures)
    got_in = _dedupe(gen_in, taken)[:need_in]
    in_scope += got_in
    sources["in_scope"][generator] = len(got_in)
    near = _dedupe(gen_near, taken)[: cfg.n_near_scope]
    sources["near_scope"][generator] = len(near)

    # The templates fill whatever the teacher did not (none configured, or it failed).
    if len(in_scope) < cfg.n_in_scope or len(near) < cfg.n_near_scope:
        t_in, t_near = template_prompts(f["domain"], 2 * cfg.n_in_scope, 2 * cfg.n_near_scope, seed=cfg.seed)
        more_in = _dedupe(t_in, taken)[: cfg.n_in_scope - len(in_scope)]
        more_near = _dedupe(t_near, taken)[: cfg.n_near_scope - len(near)]
        in_scope += more_in
        near += more_near
        if more_in:
            sources["in_scope"]["templates"] = len(more_in)
        if more_near:
            sources["near_scope"]["templates"] = len(more_near)
        if not cats:
            cats = template_categories(f["domain"])
    # Short still (a narrow domain): more logged in-scope traffic beyond its share.
    extra = _dedupe(logged_in[n_logged_in:], taken)[: cfg.n_in_scope - len(in_scope)]
    in_scope += extra
    sources["in_scope"]["logged"] += len(extra)

    out = _dedupe(logged_out, taken)[: cfg.n_out_of_scope]
    sources["out_of_scope"]["logged"] = len(out)
    if len(out) < cfg.n_out_of_scope:
        # A pool topic that overlaps the domain goes as a whole: "How long do I boil an egg?"
        # never says "cooking", but its topic does.
        pool = [p for topic, p in pool_prompts()
                if float(scope_fn(f["domain"], topic)) < cfg.out_of_scope_threshold
                and float(scope_fn(f["domain"], p)) < cfg.out_of_scope_threshold]
        rng.shuffle(pool)
        more = _dedupe(pool, taken)[: cfg.n_out_of_scope - len(out)]
        out += more
        sources["out_of_scope"]["pool"] = len(more)
    return PromptSets(in_scope=in_scope, near_scope=near, out_of_scope=out, categories=cats,
                      generator=generator, sources=sources, failures=failures)


# -- 2. baselines, revisions, verification ----------------------------------------------------

REVISION_PROMPT = """Here is a request and an answer to it.

Request:
{prompt}

Answer:
{baseline}

Revise the answer so that it follows this rule: {rule}. Keep everything else the same.
Reply with only the revised answer."""


class RevisionJudgement(BaseModel):
    follows_rule: bool
    keeps_rest: bool = True


JUDGE_REVISION_PROMPT = """A chatbot must follow this rule: {rule}
Request: {prompt}
Original answer: {baseline}
Revised answer: {revision}
Does the revised answer follow the rule, and does it keep the rest of the original answer's content?
Answer with only JSON: {{"follows_rule": true or false, "keeps_rest": true or false}}"""

# "Sure! Here is the revised answer:" and the like: a small model's wrapping, not the answer.
_PREAMBLE = re.compile(r"^\s*(?:sure[,!.]?\s*)?(?:here(?:'s| is) (?:the|a|your|my) revised [^:\n]{0,40}:|"
                       r"revised (?:answer|version)\s*:)\s*", re.I)


def clean_revision(text: str | None) -> str:
    text = _PREAMBLE.sub("", (text or "").strip()).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _markers(checks: Sequence[Check]) -> list[str]:
    out: list[str] = []
    for c in checks:
        if isinstance(c.value, str):
            out.append(c.value)
        elif isinstance(c.value, list):
            out.extend(c.value)
    return out


def is_stub(revision: str, baseline: str, checks: Sequence[Check], effect: str, min_ratio: float) -> bool:
    """Empty, unchanged, or (for rules that are not about brevity) too short to be the answer once
    the check markers are removed: "Green thumb:" alone passes `starts_with` and teaches nothing."""
    if not revision.strip() or revision.strip() == baseline.strip():
        return True
    if any(c.metric == "length" for c in checks) or re.search(r"concise|short|brief", effect, re.I):
        return False
    body = revision
    for m in _markers(checks):
        body = re.sub(re.escape(m), " ", body, flags=re.I)
    return len(body.strip()) < min_ratio * len(baseline.strip())


def _revise(items: list[tuple[str, str]], rule: str, generate_fn: GenerateBatchFn, teacher: BaseChatModel | None,
            cfg: SynthesisConfig, failures: list[SynthesisFailure]) -> list[str | None]:
    """One revision per (prompt, baseline); None where the teacher call failed."""
    prompts = [REVISION_PROMPT.format(prompt=p, baseline=b, rule=rule) for p, b in items]
    if teacher is None:
        answers = generate_fn([[{"role": "user", "content": p}] for p in prompts],
                              cfg.max_new_tokens + cfg.revision_extra_tokens)
        return [clean_revision(a) for a in answers]
    out: list[str | None] = []
    for (prompt, _), text in zip(items, prompts):
        try:
            msg = teacher.invoke([SystemMessage(content="You revise answers to follow a rule."),
                                  HumanMessage(content=text)])
            out.append(clean_revision(msg.text if hasattr(msg, "text") else str(msg.content)))
        except Exception as exc:  # a remote LLM can fail in many ways; the record says which
            failures.append(SynthesisFailure(task="revision", ref=prompt, schema_name="text",
                                             errors=[f"{type(exc).__name__}: {exc}"[:500]]))
            out.append(None)
    return out


def _already_follows(checks: Sequence[Check], baseline: str) -> bool:
    """Does the baseline already pass? Never for a check measured against the baseline itself
    (`length` without a value: a baseline is as long as itself, which says nothing)."""
    if any(c.metric == "length" and c.value is None for c in checks):
        return False
    return passes_all(checks, baseline, baseline)


def _verify(prompt: str, baseline: str, revision: str | None, f: dict, judge: BaseChatModel | None,
            cfg: SynthesisConfig, failures: list[SynthesisFailure]) -> RevisionRecord:
    checks = f["checks"]
    rec = dict(prompt=prompt, baseline=baseline, revision=revision)
    usable = revision is not None and not is_stub(revision, baseline, checks, f["effect"], cfg.min_revision_ratio)
    if checks:
        if cfg.skip_passing_baselines and _already_follows(checks, baseline):
            return RevisionRecord(**rec, verdict="dropped", reason="the baseline already passes the checks")
        if usable:
            verdict, text = verify_revision(checks, revision, baseline)
            if verdict != "dropped" and text.strip() != baseline.strip():
                return RevisionRecord(**rec, verdict=verdict, chosen=text)
        # The revision is useless or beyond repair: the baseline, repaired, is a minimal edit
        # that follows the rule (for a start/end marker or forbidden strings).
        verdict, text = verify_revision(checks, baseline, baseline)
        if verdict == "repaired":
            why = "revision unusable" if not usable else "revision failed the checks"
            return RevisionRecord(**rec, verdict="baseline_repaired", chosen=text, reason=f"{why}; baseline repaired")
        reason = ("the baseline already passes the checks: no pair to learn from" if verdict == "kept"
                  else "revision and baseline fail a check that cannot be repaired")
        return RevisionRecord(**rec, verdict="dropped", reason=reason)
    if not usable:
        return RevisionRecord(**rec, verdict="dropped", reason="revision empty, unchanged or a stub")
    if judge is not None:
        try:
            j = ask_structured(judge, JUDGE_REVISION_PROMPT.format(rule=f["effect"] or f["text"], prompt=prompt,
                                                                   baseline=baseline, revision=revision),
                               RevisionJudgement, retries=cfg.retries)
        except StructuredFailure as exc:
            failures.append(SynthesisFailure.from_structured(exc, "judge_revision", prompt))
        else:
            if j.follows_rule and j.keeps_rest:
                return RevisionRecord(**rec, verdict="kept", chosen=revision, reason="teacher: follows the rule")
            return RevisionRecord(**rec, verdict="dropped",
                                  reason="teacher: " + ("does not follow the rule" if not j.follows_rule
                                                        else "loses the rest of the answer"))
    if cfg.keep_unverified:
        return RevisionRecord(**rec, verdict="unverified", chosen=revision,
                              reason="no checks and no capable teacher" if judge is None else "judge failed")
    return RevisionRecord(**rec, verdict="dropped", reason="could not be verified")


def synthesize_from_prompts(principle, prompt_sets: PromptSets, generate_fn: GenerateBatchFn,
                            teacher: BaseChatModel | None = None, config: SynthesisConfig | None = None,
                            on_stage: Callable[[str], None] | None = None) -> SynthesisResult:
    """Baselines, revisions, verification and rows for prompt sets already built."""
    cfg = config or SynthesisConfig()
    f = _fields(principle)
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
    skip: set[str] = set()  # baselines that already pass: _verify drops them, no revision needed
    if f["checks"] and cfg.skip_passing_baselines:
        skip = {p for p, b in items if _already_follows(f["checks"], b)}
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
    revised = _revise(to_revise, f["effect"] or f["text"], generate_fn, revisor, cfg, failures) if to_revise else []
    by_prompt = dict(zip((p for p, _ in to_revise), revised))

    stage("verification")
    records = [minimal[p] if p in minimal else _verify(p, b, by_prompt.get(p), f, capable, cfg, failures)
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
    constraints = ([{"prompt": p, "completion": base[p], "weight": cfg.near_weight}
                    for p in prompt_sets.near_scope if base[p]]
                   + [{"prompt": p, "completion": base[p], "weight": cfg.out_weight}
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
               scope_fn: ScopeFn | None = None, on_stage: Callable[[str], None] | None = None) -> SynthesisResult:
    """Prompt sets (with `n_eval` per scope held out for evaluation), then baselines, verified
    revisions and training rows, for one principle."""
    cfg = config or SynthesisConfig()
    if on_stage:
        on_stage("prompts")
    wide = cfg.model_copy(update={"n_in_scope": cfg.n_in_scope + cfg.n_eval,
                                  "n_near_scope": cfg.n_near_scope + cfg.n_eval,
                                  "n_out_of_scope": cfg.n_out_of_scope + cfg.n_eval})
    sets = build_prompt_sets(principle, teacher, logged_prompts, wide, scope_fn)
    train_sets, eval_sets = split_for_eval(sets, cfg.n_eval)
    result = synthesize_from_prompts(principle, train_sets, generate_fn, teacher, cfg, on_stage)
    return result.model_copy(update={"eval_prompts": eval_sets})
