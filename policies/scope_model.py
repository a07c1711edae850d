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

Fitting takes a fraction of a second and is done once per domain; scoring a request is one dot
product with its (cached) vector.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from policies.corpus import Corpus
from policies.encoder import Encoder
from policies.synthesis.templates import parse_domain, template_prompts

EXEMPLAR_WEIGHT = 3.0  # a template request, the domain phrase, an evidence request: each worth this many corpus requests
NEAR_WEIGHT = 3.0  # a request of one of the closest topics outside the domain
NEAR_TOPICS = 8


@dataclass
class ScopeModel:
    domain: str
    topics: list[str]  # corpus topics inside the domain
    near_topics: list[str]  # the closest corpus topics outside it
    coef: np.ndarray = field(repr=False)  # Shape: (dim,)
    intercept: float = 0.0
    threshold: float = 0.5

    def probability(self, vectors: np.ndarray) -> np.ndarray:
        """Shape: vectors (n, dim) or (dim,) -> (n,) or scalar."""
        z = vectors @ self.coef + self.intercept
        return 1 / (1 + np.exp(-z))

    def applies(self, vector: np.ndarray) -> bool:
        return bool(self.probability(vector) >= self.threshold)


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
    return ScopeModel(domain, inside, near, model.coef_[0].astype(np.float32), float(model.intercept_[0]))


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
        return float(self.model(domain, positives).probability(self.encoder.embed_one(text)))
