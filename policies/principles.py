"""Principles from verbal feedback (ConstitutionMaker, C3PO), and their near-duplicate clustering.

One piece of feedback (a comment, a corrected answer, a natural-feedback span that states a
rule) becomes one `Principle` in C3PO's form: a short imperative `text`, the `domain` where it
applies, the `effect` to change, its `source` (kudos / critique / rewrite), optional
programmatic `checks` (policies.checks' compact form) and the `evidence` it came from.

A capable teacher writes the proposal (`propose_principle` with `is_capable(llm)`); a failed
answer comes back as a `ProposalFailure` with the raw text, for the caller to record. Without
a capable teacher, `policies.principle_rules` reads explicit rule statements ("from now on,
no emojis in my work emails") and corrections.

Proposals are aggregated as ICAI does: `cluster_principles` merges near-duplicates by TF-IDF
cosine over word and character n-grams (hand-written numpy: no embedding service, no
scikit-learn), summing their evidence into a support count. Voting lives in policies.icai.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Literal, Sequence

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field, field_validator

from policies.checks import METRICS, format_check, parse_check
from policies.scope import STOP, stem
from policies.teacher import StructuredFailure, ask_structured, is_capable

Source = Literal["kudos", "critique", "rewrite"]
# The domain of a rule stated without one ("never use emojis"): applies to every request.
GLOBAL_DOMAIN = "all requests"


class Evidence(BaseModel):
    """A record a principle came from; `kind` names its table (feedback, natural_feedback) or
    a preference pair."""

    kind: Literal["feedback", "natural", "pair"] = "feedback"
    id: str


class Principle(BaseModel):
    """A proposed principle. Stored as one row of the principles table (checks and evidence as
    JSON); `support` lives on the cluster, not here."""

    text: str = Field(min_length=3, description="short imperative, conditional when scoped")
    domain: str = Field(min_length=1, description="where it applies; GLOBAL_DOMAIN for everywhere")
    effect: str = Field(min_length=1, description="what to change in the answer")
    source: Source
    checks: list[str] = Field(default_factory=list, description="compact checks, e.g. 'starts_with \"X\"'")
    evidence: list[Evidence] = Field(default_factory=list)
    proposer: Literal["rules", "llm"] = "llm"
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)

    @field_validator("checks")
    @classmethod
    def _checks_parse(cls, checks: list[str]) -> list[str]:
        # Normalised through the parser so stored checks always round-trip.
        return [format_check(parse_check(c)) for c in checks]


class FeedbackInput(BaseModel):
    """The feedback to turn into a principle (built by the service from its store)."""

    id: str
    kind: Literal["comment", "correction", "natural_span"]
    text: str = Field(description="the comment, the corrected answer, or the natural-feedback span")
    prompt: str = Field(default="", description="the user's request the answer was for")
    answer: str = Field(default="", description="our answer the feedback is about")
    positive: bool | None = Field(default=None, description="the rating's direction, when known")

    @property
    def evidence(self) -> Evidence:
        return Evidence(kind="natural" if self.kind == "natural_span" else "feedback", id=self.id)


class ProposalFailure(BaseModel):
    """The teacher never gave a parseable proposal. Stored in llm_failures (task, ref, schema,
    raw, errors); never dropped."""

    task: str = "propose_principle"
    ref: str
    schema_name: str
    raw: list[str]
    errors: list[str]

    @classmethod
    def from_structured(cls, exc: StructuredFailure, ref: str, task: str = "propose_principle") -> "ProposalFailure":
        return cls(task=task, ref=ref, schema_name=exc.schema, raw=list(exc.raw), errors=list(exc.errors))


# -- proposal by the teacher -------------------------------------------------------------------

class ProposalAnswer(BaseModel):
    """What the teacher answers; next to PROPOSAL_PROMPT, which describes it."""

    text: str = Field(min_length=3)
    domain: str = Field(min_length=1)
    effect: str = Field(min_length=1)
    source: Source
    checks: list[str] = Field(default_factory=list)

    @field_validator("checks")
    @classmethod
    def _checks_parse(cls, checks: list[str]) -> list[str]:
        return [format_check(parse_check(c)) for c in checks]


PROPOSAL_PROMPT = f"""You turn one piece of user feedback on a chatbot's answer into one principle for the chatbot.
A principle is a short imperative, conditional when it should only apply to some requests, e.g.
"When the user asks about a music genre, ask them what they would like to learn about."
Fields:
- text: the principle.
- domain: where it applies, a short phrase ("writing emails to the user's boss", "gardening questions");
  "{GLOBAL_DOMAIN}" only if the user clearly wants it everywhere. Do not make it wider than the feedback says.
- effect: what should change in the answer ("no emojis", "begin with 'Summary:'").
- source: "kudos" (the user praised something), "critique" (the user criticised something) or
  "rewrite" (the user rewrote our answer).
- checks: programmatic checks an answer in the domain must pass, as `metric value` strings with a JSON
  value, only when one clearly fits, else []. Metrics: {", ".join(METRICS)}.
  Examples: starts_with "Summary:"   ends_with "Best, Ana"   contains_none_strings ["😀", "🎉"]
  contains_all_strings ["Background:", "Event:"]   doesnt_start_with "Sure"   is_language "de"   length
  (length: no longer than the usual answer).
Answer with only a JSON object: {{"text": ..., "domain": ..., "effect": ..., "source": ..., "checks": [...]}}"""

_KIND_LABEL = {
    "comment": "The user's comment on the answer",
    "correction": "The user's corrected version of the answer",
    "natural_span": "What the user said next",
}


def _clip(text: str, limit: int = 1500) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def proposal_messages(feedback: FeedbackInput) -> list:
    body = (f"The user's request:\n{_clip(feedback.prompt)}\n\nThe chatbot's answer:\n{_clip(feedback.answer)}\n\n"
            f"{_KIND_LABEL[feedback.kind]}:\n{_clip(feedback.text)}")
    return [SystemMessage(content=PROPOSAL_PROMPT), HumanMessage(content=body)]


def propose_principle(
    feedback: FeedbackInput, llm: BaseChatModel | None, retries: int = 2
) -> Principle | ProposalFailure | None:
    """One principle from one feedback.

    With a capable teacher: its structured answer (proposer "llm"), or a ProposalFailure with
    every raw answer. Otherwise (None, or the small local model): the rule reader (proposer
    "rules"), which returns None when the feedback states no rule and is not a correction.
    """
    if not is_capable(llm):
        from policies.principle_rules import propose_by_rules

        return propose_by_rules(feedback)
    try:
        answer = ask_structured(llm, proposal_messages(feedback), ProposalAnswer, retries=retries)
    except StructuredFailure as exc:
        return ProposalFailure.from_structured(exc, ref=feedback.id)
    return Principle(**answer.model_dump(), evidence=[feedback.evidence], proposer="llm", confidence=0.8)


# -- near-duplicate clustering -----------------------------------------------------------------

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
    words = [stem(w) for w in re.findall(r"[a-z0-9']+", text) if w not in STOP or w == "avoid"]
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:])]


def _char_features(text: str) -> list[str]:
    # Over content words only: principles share templates ("when the user asks about ...,
    # begin your answer with ...") whose characters would otherwise make a cooking rule look
    # like a gardening one; the n-grams are there to match word variants (email/emails).
    words = [w for w in re.findall(r"[a-z0-9']+", text) if w not in STOP or w == "avoid"]
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
