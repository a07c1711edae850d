"""Near-duplicate principles: similarity of their texts, clustering, and the nearest one under review.

Proposals are aggregated as ICAI does: `cluster_principles` merges near-duplicates by TF-IDF
cosine over word and character n-grams (numpy), summing their evidence into a support count;
`nearest` finds the principle under review that new evidence belongs to. Voting lives in
policies.principles.icai.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

import numpy as np
from pydantic import BaseModel, Field

from policies.principles.model import Principle
from policies.text import TOPIC_STOPWORDS, stem

# Phrasings of the same instruction that share no characters ("don't use" / "avoid" / "no") are
# mapped to one token first, so that the n-grams can see they agree.
_CANON = [
    (re.compile(r"\b(?:do not|don't|dont|never|please don't|refrain from|stop|no more|avoid|without)"
                r"(?:\s+(?:use|using|add|adding|include|including|put|putting|any))*\b"), " avoid "),
    (re.compile(r"^(?:no)\b"), " avoid "),
    (re.compile(r"\b(?:begin|start|open|preface)(?:s|ing)?\b"), " begin "),
    (re.compile(r"\b(?:end|finish|close|conclude)(?:s|ing)?\b"), " end "),
    (re.compile(r"\b(?:always|please|select the response that|the response that|response that)\b"), " "),
]


def normalise(text: str) -> str:
    t = text.lower().replace("’", "'")
    for pattern, repl in _CANON:
        t = pattern.sub(repl, t)
    return " ".join(t.split())


def _word_features(text: str) -> list[str]:
    words = [stem(w) for w in re.findall(r"[a-z0-9']+", text) if w not in TOPIC_STOPWORDS or w == "avoid"]
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:])]


def _char_features(text: str) -> list[str]:
    # Over content words only: principles share templates ("when the user asks about ...,
    # begin your answer with ...") whose characters would otherwise make a cooking rule look
    # like a gardening one; the n-grams are there to match word variants (email/emails).
    words = [w for w in re.findall(r"[a-z0-9']+", text) if w not in TOPIC_STOPWORDS or w == "avoid"]
    t = " " + " ".join(words or text.split()) + " "
    return [t[i:i + n] for n in (3, 4, 5) for i in range(len(t) - n + 1)]


def _tfidf(docs: list[list[str]]) -> np.ndarray:
    """Rows L2-normalised TF-IDF (sublinear tf, smoothed idf). Shape: (len(docs), vocabulary)."""
    vocab: dict[str, int] = {}
    for d in docs:
        for f in d:
            vocab.setdefault(f, len(vocab))
    m = np.zeros((len(docs), max(len(vocab), 1)))
    for i, d in enumerate(docs):
        for f, c in Counter(d).items():
            m[i, vocab[f]] = 1.0 + math.log(c)
    df = (m > 0).sum(axis=0)
    m *= np.log((1 + len(docs)) / (1 + df)) + 1.0
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms == 0, 1.0, norms)


def similarity_matrix(texts: Sequence[str], char_weight: float = 0.5) -> np.ndarray:
    """Cosine similarity of principle texts: a weighted mean of word (1-2 gram, stemmed) and
    character (3-5 gram) TF-IDF cosines. Shape: (n, n), 1 on the diagonal."""
    # A text made only of canonicalised words ("Select the response that") keeps its own words,
    # or it would have no features and match nothing, not even its exact copy.
    norm = [normalise(t) or t.lower() for t in texts]
    words = _tfidf([_word_features(t) for t in norm])
    chars = _tfidf([_char_features(t) for t in norm])
    return (1 - char_weight) * (words @ words.T) + char_weight * (chars @ chars.T)


def cluster_texts(texts: Sequence[str], threshold: float = 0.45) -> list[list[int]]:
    """Average-linkage agglomerative clustering: merge the two most similar clusters while their
    mean pairwise similarity is at least `threshold`. Returns index lists, largest first."""
    n = len(texts)
    if n == 0:
        return []
    sim = similarity_matrix(texts)
    clusters: dict[int, list[int]] = {i: [i] for i in range(n)}
    link = sim.copy()
    np.fill_diagonal(link, -np.inf)
    while len(clusters) > 1:
        a, b = np.unravel_index(np.argmax(link), link.shape)
        if link[a, b] < threshold:
            break
        na, nb = len(clusters[a]), len(clusters[b])
        # Lance-Williams update for average linkage: the merged cluster's mean similarity.
        merged = (na * link[a] + nb * link[b]) / (na + nb)
        link[a, :], link[:, a] = merged, merged
        link[a, a] = -np.inf
        link[b, :], link[:, b] = -np.inf, -np.inf
        clusters[a] = clusters[a] + clusters.pop(b)
    return sorted((sorted(c) for c in clusters.values()), key=lambda c: (-len(c), c[0]))


def nearest(text: str, candidates: Sequence[str], threshold: float = 0.45) -> tuple[int, float] | None:
    """The candidate most similar to `text` when at least `threshold` (to attach new evidence
    to a principle already under review), else None."""
    if not candidates:
        return None
    row = similarity_matrix([text, *candidates])[0, 1:]
    best = int(np.argmax(row))
    return (best, float(row[best])) if row[best] >= threshold else None


class PrincipleCluster(BaseModel):
    principle: Principle = Field(description="the representative, with every member's evidence")
    members: list[int] = Field(description="indices into the clustered list")
    support: int = Field(description="distinct evidence records behind the cluster (members when none)")
    cohesion: float = Field(description="mean pairwise similarity of the members (1 for one member)")


def cluster_principles(principles: Sequence[Principle], threshold: float = 0.45) -> list[PrincipleCluster]:
    """Merge near-duplicate principles. The representative is the medoid (most similar to the
    rest), ties broken by confidence then brevity; evidence is the union, in order; checks are
    the representative's, or the most common non-empty set among members when it has none."""
    texts = [p.text for p in principles]
    sim = similarity_matrix(texts) if texts else np.zeros((0, 0))
    out = []
    for idx in cluster_texts(texts, threshold):
        sub = sim[np.ix_(idx, idx)]
        centrality = sub.sum(axis=1)
        rep_i = max(range(len(idx)), key=lambda k: (round(float(centrality[k]), 6),
                                                     principles[idx[k]].confidence, -len(texts[idx[k]])))
        rep = principles[idx[rep_i]]
        evidence, seen = [], set()
        for i in idx:
            for e in principles[i].evidence:
                if (e.kind, e.id) not in seen:
                    seen.add((e.kind, e.id))
                    evidence.append(e)
        checks = rep.checks
        if not checks:
            sets = Counter(tuple(principles[i].checks) for i in idx if principles[i].checks)
            checks = list(sets.most_common(1)[0][0]) if sets else []
        sources = Counter(principles[i].source for i in idx)
        cohesion = 1.0 if len(idx) == 1 else float((sub.sum() - len(idx)) / (len(idx) * (len(idx) - 1)))
        merged = rep.model_copy(update={
            "evidence": evidence, "checks": checks, "source": sources.most_common(1)[0][0],
            "confidence": max(principles[i].confidence for i in idx),
        })
        out.append(PrincipleCluster(principle=merged, members=idx, support=len(evidence) or len(idx),
                                    cohesion=round(cohesion, 4)))
    return sorted(out, key=lambda c: (-c.support, c.members[0]))


# Cosines of the sentence encoder above which two principles say the same thing, and two
# domains name the same scope (measured: "Do not use emojis in work emails" / "Avoid emoji when
# writing emails for work" 0.93, / "Do not use hashtags" 0.55; "my LinkedIn posts" / "LinkedIn
# posts" 0.88, "emails to my boss" / "emails to my landlord" 0.66).
SAME_TEXT = 0.8
SAME_SCOPE = 0.85


def nearest_by_meaning(text: str, candidates: Sequence[str], encoder, threshold: float = SAME_TEXT) -> tuple[int, float] | None:
    """The candidate closest in meaning to `text` (encoder cosine) when at least `threshold`."""
    if not candidates:
        return None
    v = encoder.embed_one(text)
    sims = encoder.embed(list(candidates)) @ v
    best = int(np.argmax(sims))
    return (best, float(sims[best])) if sims[best] >= threshold else None


def same_scope_by_meaning(a: str, b: str, encoder, threshold: float = SAME_SCOPE) -> bool:
    return float(encoder.embed_one(a) @ encoder.embed_one(b)) >= threshold
