"""Step 1 of C3PO synthesis: in-scope, near-scope and out-of-scope prompts for one principle.

Categories slightly wider than the principle's domain, then in-scope and near-scope prompts,
from a capable teacher (structured answers; every unparseable answer is recorded as a failure
and the loop goes on). Logged user prompts that fall in the domain join the in-scope set;
logged prompts clearly outside it form the out-of-scope set, topped up from the built-in
general pool. Without a capable teacher (None, or the small local model) the template
generator of policies.synthesis.templates writes the in/near prompts.
"""

from __future__ import annotations

import random
from typing import Literal, Sequence

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field

from policies.principles.model import principle_fields
from policies.scope import lexical_score
from policies.synthesis.pool import pool_prompts
from policies.synthesis.records import PromptSets, ScopeFn, SynthesisConfig, SynthesisFailure
from policies.synthesis.templates import template_categories, template_prompts
from policies.teacher import StructuredFailure, ask_structured, is_capable

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
                      config: SynthesisConfig | None = None, scope_fn: ScopeFn | None = None,
                      corpus: PromptSets | None = None) -> PromptSets:
    """In-scope, near-scope and out-of-scope prompts for one principle.

    `logged_prompts` are user prompts from the service's traffic; `scope_fn(domain, prompt)` splits
    them (default policies.scope.lexical_score: >= in_scope_threshold is in, < out_of_scope_threshold
    is out, the band between is left out). A lexical scorer misses in-domain prompts that do not
    name the domain; pass the scope model's probability (policies.scope_model.ScopeModels.score).
    `corpus`: realistic requests of the domain, of its neighbours and of everything else, from the
    built-in corpus (policies.corpus); they come after logged traffic and the teacher, before the
    templates and the small general pool.
    """
    cfg = config or SynthesisConfig()
    scope_fn = scope_fn or lexical_score
    f = principle_fields(principle)
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

    # The corpus's real requests next, then the templates fill whatever is still missing.
    if corpus is not None:
        c_in = _dedupe(corpus.in_scope, taken)[: cfg.n_in_scope - len(in_scope)]
        c_near = _dedupe(corpus.near_scope, taken)[: cfg.n_near_scope - len(near)]
        in_scope += c_in
        near += c_near
        sources["in_scope"]["corpus"], sources["near_scope"]["corpus"] = len(c_in), len(c_near)
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
    if corpus is not None and len(out) < cfg.n_out_of_scope:
        c_out = _dedupe(corpus.out_of_scope, taken)[: cfg.n_out_of_scope - len(out)]
        out += c_out
        sources["out_of_scope"]["corpus"] = len(c_out)
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
