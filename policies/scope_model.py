"""Scope by meaning: one small model per principle domain, on sentence-encoder vectors, that says
how likely a request is to fall inside the domain.

Plain cosine between a request and the domain phrase does not separate domains with one
threshold (measured: landlord emails 0.62 against emails to a boss 0.30, but astronomy 0.29
against near-scope 0.08), so each domain is calibrated with exemplars instead:

- the built-in corpus (policies.corpus) is searched for the topics the domain names (every topic
  whose mean vector is within `margin` of the best one's cosine to the domain phrase); their
  requests are positive exemplars, with the domain phrase itself and any exemplars the service
  has (the requests a principle's evidence came from);
- every other corpus request is a negative, those of the closest topics weighted more (they are
  the near-scope requests a domain must refuse);
- for a domain that names something to write ("emails to my landlord"), the template generator's
  in-scope and near-scope requests (policies.synthesis.templates: the same artefact for someone
  else, another artefact for the same person) join as positives and negatives, because corpus
  topics are coarser than such a domain;
- a logistic regression on those vectors (class-balanced) gives the probability; 0.5 decides.

A domain that names a person ("emails to my landlord Mr Okafor", "texts to my sister Priya") is
two conditions, and the encoder blurs both (measured on the test split, 20 + 20 requests each:
Okafor emails 0.45 in scope, Sarah emails 0.35, because the corpus's "email to landlord" requests
are about repairs, not about Mr Okafor): the request must point at that person (their name, or
the relation without somebody else's name: "my landlord", not "my old landlord, Mrs Brennan"),
and ask for that kind of writing, which the encoder judges well (an artefact model: the corpus
topics named after the artefact and the template requests for it, against the rest). Requests
that do not point at the person stay out whatever their vector says.

Fitting takes a fraction of a second and is done once per domain; scoring a request is one dot
product with its (cached) vector.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from policies.corpus import Corpus
from policies.encoder import Encoder
from policies.synthesis.templates import parse_domain, template_prompts
from policies.text import topic_words

EXEMPLAR_WEIGHT = 3.0  # a template request, the domain phrase, an evidence request: each worth this many corpus requests
NEAR_WEIGHT = 3.0  # a request of one of the closest topics outside the domain
NEAR_TOPICS = 8
AUDIENCE_MISS = 0.1  # the most a request that does not point at a domain's person scores
TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "sir"})
_OTHER_NAME = re.compile(r"^(?:'s)?,?\s+(?:(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+)?([A-Z][a-z]+)")


@dataclass(frozen=True)
class Audience:
    """The person a domain names: their names and the user's word for them (lowercase)."""

    names: tuple[str, ...]  # ("okafor",)
    relations: tuple[str, ...]  # ("landlord",)

    def named_in(self, text: str) -> bool:
        """Does the request point at this person: a name, or the relation not followed by
        somebody else's name ("my landlord", not "my old landlord, Mrs Brennan")?"""
        low = text.lower()
        if any(re.search(rf"\b{re.escape(n)}\b", low) for n in self.names):
            return True
        for rel in self.relations:
            for m in re.finditer(rf"\b{re.escape(rel)}s?\b", low):
                other = _OTHER_NAME.match(text[m.end():m.end() + 40])
                if other is None or other.group(1).lower() in self.names:
                    return True
        return False


def audience_of(domain: str) -> Audience | None:
    """The named person of a domain ("to my landlord Mr Okafor" -> okafor, landlord), if any."""
    audience = parse_domain(domain).audience
    if not audience:
        return None
    words = re.findall(r"[A-Za-z][\w-]*", audience)
    names, relations = [], []
    for i, w in enumerate(words):
        if w[0].isupper() and w.lower() not in TITLES and i > 0:
            names.append(w.lower())
            before = [b for b in words[:i] if b.lower() not in TITLES and not b[0].isupper()]
            if before and topic_words(before[-1]):
                relations.append(before[-1].lower())
    if not names:
        return None
    return Audience(tuple(dict.fromkeys(names)), tuple(dict.fromkeys(relations)))


@dataclass
class ScopeModel:
    domain: str
    topics: list[str]  # corpus topics inside the domain
    near_topics: list[str]  # the closest corpus topics outside it
    coef: np.ndarray = field(repr=False)  # Shape: (dim,)
    intercept: float = 0.0
    threshold: float = 0.5
    audience: Audience | None = None  # the person the domain names, if it names one
    artefact: "ScopeModel | None" = field(default=None, repr=False)  # the kind of writing, for such a domain

    def probability(self, vectors: np.ndarray) -> np.ndarray:
        """The encoder's part alone. Shape: vectors (n, dim) or (dim,) -> (n,) or scalar."""
        z = vectors @ self.coef + self.intercept
        return 1 / (1 + np.exp(-z))

    def score(self, text: str, vector: np.ndarray) -> float:
        """Probability that the request `text` (its vector: `vector`) is inside the domain."""
        if self.audience is None:
            return float(self.probability(vector))
        if not self.audience.named_in(text):
            return min(float(self.probability(vector)), AUDIENCE_MISS)
        return float(self.artefact.probability(vector))


def domain_topics(domain_vector: np.ndarray, corpus: Corpus, margin: float = 0.03) -> tuple[list[str], list[str]]:
    """(topics inside the domain, the closest topics outside it), by cosine to the topics' centroids."""
    centroids = corpus.centroids()
    sims = {t: float(c @ domain_vector) for t, c in centroids.items()}
    best = max(sims.values())
    inside = [t for t in sorted(sims, key=sims.get, reverse=True) if sims[t] >= best - margin]
    near = [t for t in sorted(sims, key=sims.get, reverse=True) if t not in inside][:NEAR_TOPICS]
    return inside, near


def fit_scope(domain: str, encoder: Encoder, corpus: Corpus, positives: Sequence[str] = (),
              negatives: Sequence[str] = (), margin: float = 0.03, c: float = 1.0) -> ScopeModel:
    """A domain's scope model from the corpus, the templates (artefact domains) and `positives` /
    `negatives` (exemplars the service has)."""
    from sklearn.linear_model import LogisticRegression

    d = encoder.embed_one(domain)
    inside, near = domain_topics(d, corpus, margin)
    in_mask = np.isin(corpus.topics, inside)
    pos, pos_w = [corpus.vectors[in_mask], d[None, :]], [np.ones(int(in_mask.sum())), [EXEMPLAR_WEIGHT]]
    neg_topics = corpus.topics[~in_mask]
    neg, neg_w = [corpus.vectors[~in_mask]], [np.where(np.isin(neg_topics, near), NEAR_WEIGHT, 1.0)]
    extra_pos, extra_neg = list(positives), list(negatives)
    if parse_domain(domain).kind == "artefact":
        t_in, t_near = template_prompts(domain, 30, 60)
        extra_pos += t_in
        extra_neg += t_near
    if extra_pos:
        pos.append(encoder.embed(extra_pos))
        pos_w.append(np.full(len(extra_pos), EXEMPLAR_WEIGHT))
    if extra_neg:
        neg.append(encoder.embed(extra_neg))
        neg_w.append(np.full(len(extra_neg), EXEMPLAR_WEIGHT))
    p, n = np.vstack(pos), np.vstack(neg)
    pw, nw = np.concatenate(pos_w), np.concatenate(neg_w)
    weights = np.concatenate([pw * nw.sum() / pw.sum(), nw])  # both classes weigh the same in all
    model = LogisticRegression(C=c, max_iter=3000)
    model.fit(np.vstack([p, n]), np.r_[np.ones(len(p)), np.zeros(len(n))], sample_weight=weights)
    scope = ScopeModel(domain, inside, near, model.coef_[0].astype(np.float32), float(model.intercept_[0]))
    scope.audience = audience_of(domain)
    if scope.audience is not None:
        scope.artefact = fit_artefact(domain, encoder, corpus, positives, c)
    return scope


def fit_artefact(domain: str, encoder: Encoder, corpus: Corpus, positives: Sequence[str] = (),
                 c: float = 1.0) -> ScopeModel:
    """Does a request ask for the kind of writing a domain names, for anyone? Positives: the
    corpus topics named after it ("email to boss", "email to landlord", ... for "emails to my
    landlord Mr Okafor"; the topics nearest the artefact's phrase when none is), the template
    requests for it and `positives`; negatives: every other corpus request."""
    from sklearn.linear_model import LogisticRegression

    parts = parse_domain(domain)
    head = parts.head.split()[-1].lower()
    inside = [t for t in corpus.topic_names if re.search(rf"\b{re.escape(head)}(?:e?s)?\b", t)]
    if not inside:
        inside, _ = domain_topics(encoder.embed_one(parts.core or domain), corpus)
    mask = np.isin(corpus.topics, inside)
    extra = list(template_prompts(parts.core or domain, 30, 0)[0]) + list(positives)
    x = np.vstack([corpus.vectors, encoder.embed(extra)]) if extra else corpus.vectors
    y = np.r_[mask, np.ones(len(extra), bool)]
    model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x, y)
    return ScopeModel(parts.core or domain, inside, [], model.coef_[0].astype(np.float32), float(model.intercept_[0]))


class ScopeModels:
    """Fitted scope models by domain (and exemplars), and the request path's scorer over them."""

    def __init__(self, encoder: Encoder, corpus: Corpus):
        self.encoder, self.corpus = encoder, corpus
        self._models: dict[tuple, ScopeModel] = {}
        self._lock = threading.Lock()

    def model(self, domain: str, positives: Sequence[str] = (), negatives: Sequence[str] = ()) -> ScopeModel:
        key = (domain, tuple(positives), tuple(negatives))
        with self._lock:
            hit = self._models.get(key)
        if hit is None:
            hit = fit_scope(domain, self.encoder, self.corpus, positives, negatives)
            with self._lock:
                self._models[key] = hit
        return hit

    def score(self, domain: str, text: str, positives: Sequence[str] = ()) -> float:
        """Probability that `text` falls inside `domain` (policies.scope.ScopeMatcher's scorer)."""
        return self.model(domain, positives).score(text, self.encoder.embed_one(text))
