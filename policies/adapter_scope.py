"""Where a version's adapter applies: the requests it learned from, by meaning, or everywhere.

Why: a LoRA adapter changes every answer a little, and a little is enough. Sixteen factual
corrections trained with the job's anchoring (bench/corrections.py, train split) left 0 of 30
unrelated answers as the base model wrote them ("Give me three tips for sleeping better" became
"1. **1. **1."), although none of them is anywhere near a corrected request. Greedy answers stay
identical only if no token of them flips, which no amount of anchoring on other prompts promises.
What a correction, a complaint's better answer or a thumb teaches is about its request and the
requests that ask the same thing; so a version that learned only those carries their requests
(scope.json beside the adapter), and a request whose encoder cosine to every one of them is below
`threshold` is answered by the base weights. Near questions ("the largest city in Australia"
beside "the capital of Australia") are as close as paraphrases (cosine 0.7-0.8, measured on the
train split, `bench/corrections_recipe.py --similarity`: paraphrases 0.59 at the least,
unrelated requests 0.26 at the most); they pass the
scope, and keeping them as they were is the training's anchoring's job.

A version that learned principles also carries their domains (with the requests their evidence
came from): a request inside one of them, by the principle's scope model (policies.scope_model,
the same judgement that puts an in-context principle into a request), is answered by the
adapter. The adapter alone puts a learned rule on near-scope and unrelated requests too (the
training's anchoring keeps the greedy answers of few of them), while the scope model keeps
every unrelated request of the final scope split out and finds 0.89 of the in-scope ones
(bench/scope.py --split final). A version with a global principle ("all requests") applies
everywhere; so does an adapter registered by hand (no scope.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from policies.scope import is_global

FILE = "scope.json"
THRESHOLD = 0.45  # encoder cosine to the nearest learned request from which the adapter applies


DomainScorer = Callable[[str, str, Sequence[str]], float]  # (domain, request, positives) -> probability


@dataclass
class AdapterScope:
    """scope.json: {"everywhere": why or null, "requests": [...], "threshold": cosine,
    "domains": [{"domain": ..., "positives": [...]}]}."""

    requests: list[str] = field(default_factory=list)
    everywhere: str | None = None
    threshold: float = THRESHOLD
    domains: list[dict] = field(default_factory=list)  # the principles' domains and their evidence requests

    @classmethod
    def anywhere(cls, why: str) -> "AdapterScope":
        return cls(everywhere=why)

    @classmethod
    def parse(cls, data) -> "AdapterScope":
        """Checked: a scope that does not parse is refused at registration, not at serving."""
        if not isinstance(data, dict):
            raise ValueError("scope.json holds an object")
        everywhere, requests, threshold = data.get("everywhere"), data.get("requests", []), data.get("threshold", THRESHOLD)
        if everywhere is not None and not isinstance(everywhere, str):
            raise ValueError("scope.json: everywhere is a reason (text) or null")
        if not isinstance(requests, list) or not all(isinstance(q, str) and q.strip() for q in requests):
            raise ValueError("scope.json: requests is a list of non-empty texts")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
            raise ValueError("scope.json: threshold is a cosine in [-1, 1]")
        domains = data.get("domains", [])
        if not isinstance(domains, list) or not all(
                isinstance(d, dict) and isinstance(d.get("domain"), str) and d["domain"].strip()
                and isinstance(d.get("positives", []), list) and all(isinstance(q, str) for q in d.get("positives", []))
                for d in domains):
            raise ValueError('scope.json: domains is a list of {"domain": text, "positives": [texts]}')
        if everywhere is None and not requests and not domains:
            raise ValueError("scope.json: a scope names its requests or domains, or why it applies everywhere")
        return cls(requests=list(dict.fromkeys(requests)), everywhere=everywhere, threshold=float(threshold),
                   domains=[{"domain": d["domain"], "positives": list(d.get("positives", []))} for d in domains])

    @classmethod
    def read(cls, adapter_dir: Path | str) -> "AdapterScope":
        """The scope beside an adapter; everywhere when it has none (an adapter made by hand)."""
        path = Path(adapter_dir) / FILE
        if not path.is_file():
            return cls.anywhere("no scope.json beside the adapter")
        return cls.parse(json.loads(path.read_text(encoding="utf-8")))

    def write(self, adapter_dir: Path | str) -> None:
        (Path(adapter_dir) / FILE).write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1), encoding="utf-8")

    def to_json(self) -> dict:
        out = {"everywhere": self.everywhere, "requests": self.requests, "threshold": self.threshold}
        if self.domains:
            out["domains"] = self.domains
        return out

    def compile(self, embed: Callable[[str], np.ndarray], domain_score: DomainScorer | None = None) -> "CompiledScope":
        """With the encoder's `embed` and, for a scope with domains, `domain_score` (the scope
        models' probability; without one such a scope's domains cover every request)."""
        vectors = (np.stack([embed(q) for q in self.requests])
                   if self.everywhere is None and self.requests else None)
        return CompiledScope(self, vectors, embed, domain_score)


@dataclass
class CompiledScope:
    """A scope with its requests' vectors (unit length, as policies.encoder gives them)."""

    scope: AdapterScope
    vectors: np.ndarray | None  # Shape: (requests, dim); None when it names no request
    embed: Callable[[str], np.ndarray] = field(repr=False)
    domain_score: DomainScorer | None = field(default=None, repr=False)

    def similarity(self, request: str) -> float:
        """Cosine of a request to the nearest learned one (1.0 for a scope that is everywhere)."""
        if self.scope.everywhere is not None:
            return 1.0
        if self.vectors is None or not request.strip():
            return 0.0
        return float((self.vectors @ self.embed(request)).max())

    def in_domain(self, request: str) -> bool:
        """Is the request inside one of the learned principles' domains?"""
        if not self.scope.domains:
            return False
        if self.domain_score is None:
            return True
        return any(self.domain_score(d["domain"], request, tuple(d["positives"])) >= 0.5 for d in self.scope.domains)

    def covers(self, request: str) -> bool:
        """Does the adapter answer this request (its last user turn)?"""
        if self.scope.everywhere is not None:
            return True
        return self.similarity(request) >= self.scope.threshold or self.in_domain(request)


def version_scope(principles: Sequence[dict], requests: Sequence[str], threshold: float = THRESHOLD) -> AdapterScope:
    """The scope of a version trained on `principles` ({"id", "domain", "positives": the requests
    its evidence came from}) and on rows of `requests` (the requests of its corrections,
    complaints and thumbs)."""
    wide = [p["id"] for p in principles if not p.get("domain") or is_global(p["domain"])]
    if wide:
        return AdapterScope.anywhere(f"it learned principles for every request ({', '.join(wide)})")
    kept = [q for q in dict.fromkeys(requests) if q.strip()]
    domains = [{"domain": p["domain"], "positives": sorted(dict.fromkeys(p.get("positives") or []))} for p in principles]
    if not kept and not domains:
        return AdapterScope.anywhere("it names no request it learned from")
    return AdapterScope(requests=kept, threshold=threshold, domains=domains)
