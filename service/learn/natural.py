"""Natural feedback in the service: the classifier the analyst and `refinery mine` use (fitted on the
shipped corpus plus operators' labels, refitted when a label changes), operators' labels, and
retraining with its figures.

An operator corrects a verdict on a follow-up turn (the API, the review page, `refinery natural
label`): the label is stored with the turn, the stored verdict is made to say it, and the next
classification uses a model fitted with it. A label the analysis had missed (it found no
feedback in the turn) is accepted too: it is keyed by the follow-up request, not by a verdict.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from policies.encoder import Encoder, load_encoder
from policies.natural import CATEGORIES, DEFAULT_POLARITY, POLARITIES, Example, NaturalClassifier, load_or_fit
from policies.natural.classifier import FIELDS, examples_from_rows, read_rows
from policies.text import last_user_turn, message_text
from service.errors import APIError
from service.settings import Settings
from service.store import Store

log = logging.getLogger(__name__)

def label_examples(store: Store | None) -> list[Example]:
    """Operators' labels as training examples."""
    if store is None:
        return []
    out = []
    for row in store.natural.labels():
        msgs = row["messages"]
        turn, text = last_user_turn(msgs)
        if turn < 1:
            continue
        previous = next((message_text(m) for m in reversed(msgs[: turn - 1]) if m.get("role") == "user"), "")
        out.append(Example(text, message_text(msgs[turn - 1]), previous, row["category"], row["polarity"],
                           bool(row["principle"])))
    return out


def encoder_for(settings: Settings) -> Encoder:
    return load_encoder(settings.encoder, settings.model_cache_dir)


class Classifiers:
    """The current classifier, refitted (once, under a lock) when operators' labels change."""

    def __init__(self, settings: Settings, store: Store | None):
        self.settings, self.store = settings, store
        self._lock = threading.Lock()
        self._model: NaturalClassifier | None = None
        self._version: tuple | None = None

    def warm(self) -> None:
        """Load (or, the first time on a machine, fit: about half a minute) the classifier in the
        background, so the first analysis after start-up does not wait for it."""
        def run() -> None:
            try:
                self.current()
            except Exception:  # the analysis that needs it reports the same error
                log.exception("the natural-feedback classifier did not load")

        if self.settings.natural_detector == "encoder":
            threading.Thread(target=run, name="refinery-classifier-load", daemon=True).start()

    def current(self) -> NaturalClassifier | None:
        if self.settings.natural_detector != "encoder":
            return None
        version = self.store.natural.labels_version() if self.store is not None else ()
        with self._lock:
            if self._model is None or version != self._version:
                self._model = load_or_fit(encoder_for(self.settings), self.settings.model_cache_dir,
                                          label_examples(self.store))
                self._version = version
            return self._model


def check_label(category: str, polarity: str | None, principle: bool | None) -> dict:
    if category not in CATEGORIES:
        raise APIError(400, f"category must be one of {list(CATEGORIES)}", "category", "invalid_value")
    polarity = polarity or DEFAULT_POLARITY[category]
    if polarity not in POLARITIES:
        raise APIError(400, f"polarity must be one of {list(POLARITIES)}", "polarity", "invalid_value")
    allowed = {"clarification": ("neutral", "negative")}.get(category, (DEFAULT_POLARITY[category],))
    if polarity not in allowed:
        raise APIError(400, f"a {category} turn is {' or '.join(allowed)}, not {polarity}", "polarity", "invalid_value")
    return {"category": category, "polarity": polarity, "principle": bool(principle)}


def relabel(store: Store, follow_up_id: str, category: str, polarity: str | None, principle: bool | None,
            actor: str) -> dict:
    """Record an operator's label of the user turn that request `follow_up_id` opens with."""
    label = check_label(category, polarity, principle)
    follow_up = store.exchanges.get(follow_up_id)
    if follow_up is None:
        raise APIError(404, f"no completion with id '{follow_up_id}'", "follow_up_id", "completion_not_found")
    turn, text = last_user_turn(follow_up["messages"])
    if not follow_up.get("parent_id") or turn < 1 or follow_up["messages"][turn - 1]["role"] != "assistant":
        raise APIError(400, f"completion '{follow_up_id}' does not follow one of our answers, so its turn is no "
                            "feedback on one", "follow_up_id", "not_a_follow_up")
    return store.natural.relabel(follow_up, turn, text, label, actor)


def score(pred, gold) -> dict:
    """Category accuracy and macro-F1, polarity accuracy, principle precision and recall."""
    from sklearn.metrics import accuracy_score, f1_score

    pc, gc = [p.category for p in pred], [g.category for g in gold]
    tp = sum(p.principle and g.principle for p, g in zip(pred, gold))
    fp = sum(p.principle and not g.principle for p, g in zip(pred, gold))
    fn = sum(g.principle and not p.principle for p, g in zip(pred, gold))
    return {"turns": len(gold), "category_accuracy": accuracy_score(gc, pc),
            "macro_f1": f1_score(gc, pc, average="macro", labels=list(CATEGORIES), zero_division=0),
            "polarity_accuracy": accuracy_score([g.polarity for g in gold], [p.polarity for p in pred]),
            "principle_precision": tp / (tp + fp) if tp + fp else None,
            "principle_recall": tp / (tp + fn) if tp + fn else None}


def retrain(settings: Settings, store: Store | None, eval_files: list[Path] = (), folds: int = 5) -> dict:
    """Fit on the shipped corpus plus operators' labels (and keep it for the analyst), with the
    figures of a `folds`-fold cross-validation over those examples (conversations kept whole)
    and, for each file in `eval_files` (conversations with labels), the figures there."""
    encoder = encoder_for(settings)
    corpus_rows = read_rows()
    examples, groups = [], []
    for g, row in enumerate(corpus_rows):
        ex = examples_from_rows([row])
        examples += ex
        groups += [g] * len(ex)
    extra = label_examples(store)
    examples += extra
    groups += list(range(len(corpus_rows), len(corpus_rows) + len(extra)))
    corpus_n = len(examples) - len(extra)
    vectors = tuple(np.vstack([encoder.embed_kept([getattr(e, f) for e in examples[:corpus_n]], f"natural-{f}"),
                               encoder.embed([getattr(e, f) for e in extra]).reshape(len(extra), encoder.dim)])
                    for f in FIELDS)
    groups_a = np.array(groups)
    unique = np.unique(groups_a)
    np.random.RandomState(0).shuffle(unique)
    preds: list = [None] * len(examples)
    for part in np.array_split(unique, folds):
        test = np.where(np.isin(groups_a, part))[0]
        train = np.where(~np.isin(groups_a, part))[0]
        model = NaturalClassifier.fit(encoder, [examples[i] for i in train], vectors=tuple(v[train] for v in vectors))
        for i, p in zip(test, model.predict_many([examples[i] for i in test], tuple(v[test] for v in vectors))):
            preds[i] = p
    report = {"examples": len(examples), "operator_labels": len(extra), "cross_validation": score(preds, examples)}
    model = load_or_fit(encoder, settings.model_cache_dir, extra)
    report["evaluation"] = {}
    for path in eval_files:
        gold = examples_from_rows(read_rows(path))
        report["evaluation"][str(path)] = score(model.predict_many(gold), gold)
    return report
