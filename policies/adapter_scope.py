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

A version that learned a principle applies everywhere: a principle's domain is a description,
and its scope model (policies.scope_model) misses a third of in-scope requests, which would cut
the rule where it belongs. So does an adapter registered by hand (no scope.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

FILE = "scope.json"
THRESHOLD = 0.45  # encoder cosine to the nearest learned request from which the adapter applies


@dataclass
class AdapterScope:
    """scope.json: {"everywhere": why or null, "requests": [...], "threshold": cosine}."""

    requests: list[str] = field(default_factory=list)
    everywhere: str | None = None
    threshold: float = THRESHOLD

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
        if everywhere is None and not requests:
            raise ValueError("scope.json: a scope names its requests, or why it applies everywhere")
        return cls(requests=list(dict.fromkeys(requests)), everywhere=everywhere, threshold=float(threshold))

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
        return {"everywhere": self.everywhere, "requests": self.requests, "threshold": self.threshold}

    def compile(self, embed: Callable[[str], np.ndarray]) -> "CompiledScope":
        vectors = np.stack([embed(q) for q in self.requests]) if self.everywhere is None else None
        return CompiledScope(self, vectors, embed)


@dataclass
class CompiledScope:
    """A scope with its requests' vectors (unit length, as policies.encoder gives them)."""

    scope: AdapterScope
    vectors: np.ndarray | None  # Shape: (requests, dim); None when the adapter applies everywhere
    embed: Callable[[str], np.ndarray] = field(repr=False)

    def similarity(self, request: str) -> float:
        """Cosine of a request to the nearest learned one (1.0 for a scope that is everywhere)."""
        if self.vectors is None:
            return 1.0
        return float((self.vectors @ self.embed(request)).max()) if request.strip() else 0.0

    def covers(self, request: str) -> bool:
        """Does the adapter answer this request (its last user turn)?"""
        return self.vectors is None or self.similarity(request) >= self.scope.threshold


def version_scope(principles: Sequence[str], requests: Sequence[str], threshold: float = THRESHOLD) -> AdapterScope:
    """The scope of a version trained on `principles` (ids) and on rows of `requests` (the
    requests of its corrections, complaints and thumbs)."""
    if principles:
        return AdapterScope.anywhere(f"it learned principles ({', '.join(principles)}), whose domains are descriptions")
    kept = [q for q in dict.fromkeys(requests) if q.strip()]
    if not kept:
        return AdapterScope.anywhere("it names no request it learned from")
    return AdapterScope(requests=kept, threshold=threshold)
