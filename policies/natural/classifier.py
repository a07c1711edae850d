"""The learned layer of natural feedback: logistic regressions on sentence-encoder features, trained
from a labelled corpus the package ships (data/corpus.jsonl) plus the labels operators corrected.

Features of a follow-up turn: the encoder's vectors of the turn and of our answer; the turn's
cosine to the user's previous request and to the answer; and the rule layer's verdict and the kinds of cue
that fired (policies.natural.rules), so the regression learns where the rules are precise and
where they miss. The previous request's own vector is not a feature: it let the regression learn
which subjects its corpus's feedback was about (final split: macro-F1 0.59 with it, 0.64 without;
the corpus's cross-validation 0.75 either way). Three heads: the category (six classes), whether a clarification doubts the
answer (its polarity), and whether the turn states a standing rule (a principle). The rules'
principle verdict is kept when the head says no: a rule cue such as "from now on" is precise.

An operator's label weighs OPERATOR_WEIGHT corpus examples in the fit, and is remembered by its
turn's vector: a later turn that says the same (cosine >= SAME_TURN) gets the operator's label.

A fitted model is kept as plain arrays (npz + json), never as a pickle, under the data directory;
`fit` on the shipped corpus takes seconds (the corpus's vectors are cached beside it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from policies.encoder import Encoder
from policies.natural.labels import CATEGORIES, DEFAULT_POLARITY, NaturalFeedback
from policies.natural.patterns import KINDS
from policies.natural.rules import detect_rules
from policies.text import message_text

CORPUS = Path(__file__).resolve().parent / "data" / "corpus.jsonl"
OPERATOR_WEIGHT = 5.0  # an operator's label weighs as much as this many corpus examples
SAME_TURN = 0.95  # encoder cosine from which a turn says what an operator-labelled turn said
# The principle head is fitted class-balanced (rules are rare), which pushes its probabilities up:
# at 0.5 it took 9 plain turns of final3 for rules (precision 69, recall 100); 0.7 was chosen on
# the corpus's 5-fold cross-validation (precision 84 -> 91, recall 87 -> 81) and final3 (86 / 95).
PRINCIPLE_THRESHOLD = 0.7
FIELDS = ("turn", "previous", "answer")  # the texts of an example that are embedded
FEATURES_VERSION = 2  # bumped when the same example gets other features (2: no previous-request vector)


@dataclass(frozen=True)
class Example:
    """One user turn that follows an assistant answer, with its label when known."""

    turn: str
    answer: str
    previous: str
    category: str | None = None
    polarity: str | None = None
    principle: bool | None = None


def examples_from_rows(rows: Iterable[dict]) -> list[Example]:
    """Labelled turns of conversation rows {"messages", "labels": [{"turn", "category", ...}]}."""
    out = []
    for row in rows:
        msgs = row["messages"]
        for lab in row.get("labels", []):
            t = lab["turn"]
            previous = next((message_text(m) for m in reversed(msgs[: t - 1]) if m.get("role") == "user"), "")
            out.append(Example(message_text(msgs[t]), message_text(msgs[t - 1]), previous, lab["category"],
                               lab["polarity"], bool(lab["principle"])))
    return out


def read_rows(path: Path | str = CORPUS) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _rule_features(ex: Example) -> tuple[np.ndarray, NaturalFeedback]:
    rules = detect_rules(ex.turn, ex.answer, ex.previous)
    cat = np.array([rules.category == c for c in CATEGORIES], dtype=np.float32)
    fired = {name.split(":")[0] for name in rules.cues}
    kinds = np.array([any(_kind_of(n) == k for n in fired) for k in KINDS], dtype=np.float32)
    extra = np.array([rules.principle, ex.turn.rstrip().endswith("?"), ex.answer.rstrip().endswith("?"),
                      np.log1p(len(ex.turn)) / 6, rules.similarity or 0.0], dtype=np.float32)
    return np.concatenate([cat, kinds, extra]), rules


_CUE_KIND: dict[str, str] = {}


def _kind_of(cue_name: str) -> str:
    if not _CUE_KIND:
        from policies.natural.patterns import ALL_CUES, PRAISE_THEN_BUT

        _CUE_KIND.update({c.name: c.kind for c in ALL_CUES})
        _CUE_KIND[PRAISE_THEN_BUT.name] = PRAISE_THEN_BUT.kind
    return _CUE_KIND.get(cue_name, "")


def featurize(encoder: Encoder, examples: Sequence[Example],
              vectors: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, list[NaturalFeedback]]:
    """Shape: (len(examples), 2 * dim + 2 + rule features). Also the rule verdicts."""
    if vectors is None:
        vectors = tuple(encoder.embed([getattr(e, f) for e in examples]) for f in FIELDS)
    turn, prev, ans = vectors
    cos = np.stack([(turn * prev).sum(1), (turn * ans).sum(1)], axis=1)
    rule_rows = [_rule_features(e) for e in examples]
    rules = np.stack([r[0] for r in rule_rows]) if rule_rows else np.zeros((0, 0), np.float32)
    return np.concatenate([turn, ans, cos, rules], axis=1).astype(np.float32), [r[1] for r in rule_rows]


class _Head:
    """A fitted logistic regression kept as arrays: softmax (or sigmoid) of x @ W.T + b."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, classes: list):
        self.coef, self.intercept, self.classes = coef, intercept, list(classes)

    @classmethod
    def fit(cls, x: np.ndarray, y: Sequence, c: float, weights: np.ndarray | None = None) -> "_Head":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=c, max_iter=4000, class_weight="balanced")
        lr.fit(x, list(y), sample_weight=weights)
        return cls(lr.coef_.astype(np.float32), lr.intercept_.astype(np.float32), [v.item() if hasattr(v, "item") else v for v in lr.classes_])

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Shape: (rows, classes)."""
        z = x @ self.coef.T + self.intercept
        if len(self.classes) == 2:  # sklearn keeps one row of weights for two classes
            p1 = 1 / (1 + np.exp(-z[:, 0]))
            return np.stack([1 - p1, p1], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


class NaturalClassifier:
    """The three heads, and how their answers become a NaturalFeedback verdict."""

    def __init__(self, encoder: Encoder, heads: dict[str, _Head], meta: dict | None = None,
                 overrides: tuple[np.ndarray, list[dict]] | None = None):
        self.encoder, self.heads, self.meta = encoder, heads, meta or {}
        # Operators' labels, remembered by the turn's vector: a turn that says the same again
        # gets the operator's label, whatever the regression would say (shape: (n, dim)).
        self.overrides = overrides or (np.zeros((0, encoder.dim), np.float32), [])

    # -- fitting -------------------------------------------------------------------------
    @classmethod
    def fit(cls, encoder: Encoder, examples: Sequence[Example], c: float = 1.0,
            vectors: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
            operator: Sequence[Example] = ()) -> "NaturalClassifier":
        """Fit on `examples` plus `operator` (operators' labels, each weighing OPERATOR_WEIGHT)."""
        everything = list(examples) + list(operator)
        if vectors is None:
            vectors = tuple(encoder.embed([getattr(e, f) for e in examples]) for f in FIELDS)
        if operator:
            extra = tuple(encoder.embed([getattr(e, f) for e in operator]) for f in FIELDS)
            vectors = tuple(np.vstack([v, e]) for v, e in zip(vectors, extra))
        x, _ = featurize(encoder, everything, vectors)
        w = np.r_[np.ones(len(examples)), np.full(len(operator), OPERATOR_WEIGHT)]
        heads = {"category": _Head.fit(x, [e.category for e in everything], c, w),
                 "principle": _Head.fit(x, [bool(e.principle) for e in everything], c, w)}
        clar = [i for i, e in enumerate(everything) if e.category == "clarification"]
        if len({everything[i].polarity for i in clar}) == 2:
            heads["doubt"] = _Head.fit(x[clar], [everything[i].polarity == "negative" for i in clar], c, w[clar])
        overrides = (encoder.embed([e.turn for e in operator]) if operator else np.zeros((0, encoder.dim), np.float32),
                     [{"category": e.category, "polarity": e.polarity, "principle": bool(e.principle)} for e in operator])
        return cls(encoder, heads, {"examples": len(examples), "operator_labels": len(operator), "c": c,
                                    "encoder": encoder.name}, overrides)

    # -- predicting ------------------------------------------------------------------------
    def predict_many(self, examples: Sequence[Example],
                     vectors: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> list[NaturalFeedback]:
        """Verdicts; `vectors` (turn, previous, answer embeddings) when already computed."""
        if not examples:
            return []
        x, rules = featurize(self.encoder, examples, vectors or self._vectors(examples))
        cat_p = self.heads["category"].proba(x)
        pri_p = self.heads["principle"].proba(x)[:, self.heads["principle"].classes.index(True)]
        doubt = self.heads.get("doubt")
        doubt_p = doubt.proba(x)[:, doubt.classes.index(True)] if doubt else np.zeros(len(examples))
        remembered = self._remembered(x[:, : self.encoder.dim])
        out = []
        for i, (ex, rule) in enumerate(zip(examples, rules)):
            k = int(np.argmax(cat_p[i]))
            category = self.heads["category"].classes[k]
            polarity = DEFAULT_POLARITY[category]
            if category == "clarification" and doubt_p[i] >= 0.5:
                polarity = "negative"
            principle = bool(pri_p[i] >= PRINCIPLE_THRESHOLD or rule.principle)
            if remembered[i] is not None:
                label = self.overrides[1][remembered[i]]
                category, polarity, principle = label["category"], label["polarity"], label["principle"]
            span = None
            if category != "none":
                span = rule.span if rule.category == category and rule.span else ex.turn.strip() or None
            out.append(NaturalFeedback(category=category, polarity=polarity, span=span, principle=principle,
                                       source="encoder", confidence=round(float(cat_p[i, k]), 3), cues=rule.cues,
                                       similarity=rule.similarity))
        return out

    def _remembered(self, turns: np.ndarray) -> list[int | None]:
        """Per row, the operator label whose turn says the same (cosine >= SAME_TURN), if any."""
        vecs, labels = self.overrides
        if not labels:
            return [None] * len(turns)
        sims = turns @ vecs.T
        best = sims.argmax(axis=1)
        return [int(b) if sims[i, b] >= SAME_TURN else None for i, b in enumerate(best)]

    def predict(self, example: Example) -> NaturalFeedback:
        return self.predict_many([example])[0]

    def _vectors(self, examples: Sequence[Example]):
        # Single turns come one at a time on the live path: the cache keeps a repeated text free.
        if len(examples) == 1:
            e = examples[0]
            return tuple(self.encoder.embed_one(t)[None, :] for t in (e.turn, e.previous, e.answer))
        return tuple(self.encoder.embed([getattr(e, f) for e in examples]) for f in FIELDS)

    # -- keeping ---------------------------------------------------------------------------
    def save(self, out_dir: Path | str) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {f"{n}.{k}": getattr(h, k) for n, h in self.heads.items() for k in ("coef", "intercept")}
        np.savez(out / "heads.npz", overrides=self.overrides[0], **arrays)
        (out / "heads.json").write_text(json.dumps({"classes": {n: h.classes for n, h in self.heads.items()},
                                                     "overrides": self.overrides[1], "meta": self.meta}, indent=1))

    @classmethod
    def load(cls, encoder: Encoder, out_dir: Path | str) -> "NaturalClassifier":
        out = Path(out_dir)
        spec = json.loads((out / "heads.json").read_text())
        with np.load(out / "heads.npz") as arrays:
            heads = {n: _Head(arrays[f"{n}.coef"], arrays[f"{n}.intercept"], classes)
                     for n, classes in spec["classes"].items()}
            overrides = (arrays["overrides"], spec.get("overrides", []))
        return cls(encoder, heads, spec.get("meta"), overrides)


def corpus_key(encoder: Encoder, examples: Sequence[Example], c: float) -> str:
    """Changes with the encoder, the training examples and the regularisation."""
    canon = json.dumps([encoder.name, FEATURES_VERSION, c, [(e.turn, e.answer, e.previous, e.category, e.polarity, e.principle)
                                          for e in examples]], ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def load_or_fit(encoder: Encoder, cache_dir: Path | str, extra: Sequence[Example] = (), c: float = 1.0) -> NaturalClassifier:
    """The classifier fitted on the shipped corpus plus `extra` (operator labels), from
    `cache_dir` when one with the same training data is there, else fitted and kept there."""
    examples = examples_from_rows(read_rows())
    key = corpus_key(encoder, examples + list(extra), c)
    where = Path(cache_dir) / "natural-classifier" / key
    if (where / "heads.json").exists():
        try:
            return NaturalClassifier.load(encoder, where)
        except (OSError, ValueError, KeyError):
            pass  # cut short by a crash: fitted again
    # The corpus's vectors are kept beside the encoder: a refit for a new label costs the fit only.
    vectors = tuple(encoder.embed_kept([getattr(e, f) for e in examples], f"natural-{f}") for f in FIELDS)
    model = NaturalClassifier.fit(encoder, examples, c, vectors=vectors, operator=extra)
    model.save(where)
    return model
