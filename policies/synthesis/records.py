"""What C3PO synthesis is configured with and what it produces: the config, prompt sets, revision
records, failures, and the result with its training rows (the JSONL formats of `refinery train`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Literal, Sequence

from pydantic import BaseModel, Field

from policies.teacher import StructuredFailure

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
    near_per_correction: int = Field(3, ge=0, description="near-scope constraint rows per corrected request: "
                                     "the corpus requests closest to it that do not ask the same")
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
    generator: Literal["teacher", "templates", "corpus"] = "templates"
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
