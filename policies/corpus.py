"""The built-in corpora of realistic requests, tagged by topic, and their sentence-encoder vectors.

Two corpora, written independently of each other (data/requests.jsonl: 194 topics, 17 requests
each for the 64 added in the second round and about 32 for the first 130; data/eval_requests.jsonl:
the same topics, 12 each). The first gives each
principle's scope model its exemplars (the requests of the topics its domain names, against all
the others) and C3PO synthesis its realistic in-scope, near-scope and out-of-scope prompts; the
second only ever evaluates an adapter, so the gate grades it on requests from another source
than the ones it was trained on. Most requests do not name their topic ("What is a black hole?"
is astronomy), which is what the templates could not write.

Vectors are computed once per encoder and kept beside the encoder (a .npy keyed by the corpus's
content), so a restart loads them in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policies.encoder import Encoder

DATA = Path(__file__).resolve().parent / "data"
TRAINING = DATA / "requests.jsonl"
EVALUATION = DATA / "eval_requests.jsonl"


@dataclass
class Corpus:
    """Requests with their topics and vectors. Shapes: vectors (n, dim), topics (n,)."""

    prompts: list[str]
    topics: np.ndarray
    vectors: np.ndarray
    name: str

    @property
    def topic_names(self) -> list[str]:
        return sorted(set(self.topics.tolist()))

    def centroids(self) -> dict[str, np.ndarray]:
        """Each topic's mean vector, normalised."""
        out = {}
        for t in self.topic_names:
            c = self.vectors[self.topics == t].mean(0)
            out[t] = c / (np.linalg.norm(c) or 1.0)
        return out

    def of_topics(self, topics) -> list[str]:
        keep = set(topics)
        return [p for p, t in zip(self.prompts, self.topics) if t in keep]


_CACHE: dict[tuple[str, str], Corpus] = {}
_LOCK = threading.Lock()


def load_corpus(encoder: Encoder, path: Path = TRAINING) -> Corpus:
    """The corpus at `path` with its vectors under `encoder` (computed once, kept on disk)."""
    text = Path(path).read_text(encoding="utf-8")
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    with _LOCK:
        hit = _CACHE.get((encoder.name, key))
        if hit is not None:
            return hit
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        prompts = [r["prompt"] for r in rows]
        vectors = encoder.embed_kept(prompts, f"corpus-{Path(path).stem}")
        corpus = Corpus(prompts, np.array([r["topic"] for r in rows]), vectors, Path(path).stem)
        _CACHE[(encoder.name, key)] = corpus
        return corpus
