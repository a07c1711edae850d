"""The learned natural-feedback layer on sentences of no split (none of them is in the corpus or the
benchmark files), an operator's correction changing a later prediction, and what it keeps on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies.natural.classifier import CORPUS, Example, NaturalClassifier, examples_from_rows, load_or_fit, read_rows

REQUEST = "How long does the train from Leeds to York take?"
ANSWER = "The train from Leeds to York leaves at 10:15 and takes about 25 minutes."


@pytest.fixture(scope="module")
def encoder(model_cache):
    from policies.encoder import load_encoder

    return load_encoder(None, model_cache)


@pytest.fixture(scope="module")
def classifier(encoder, model_cache):
    return load_or_fit(encoder, model_cache)


@pytest.mark.parametrize("turn, category, polarity, principle", [
    ("Perfect, that fixed it, cheers!", "positive", "positive", False),
    ("Nope, it leaves at 9:40, not 10:15.", "aware_with_correction", "negative", False),
    ("What does 'off-peak' mean here?", "clarification", "neutral", False),
    ("Are you certain? That seems far too quick.", "clarification", "negative", False),
    ("Okay, and what about from York to Durham?", "none", "neutral", False),
    ("From now on, always give me train times in 24-hour format.", "aware_with_correction", "negative", True),
    ("how long does the leeds york train take??", "repeat_rephrase", "negative", False),
])
def test_classifier_on_sentences_of_no_split(classifier, turn, category, polarity, principle):
    verdict = classifier.predict(Example(turn, ANSWER, REQUEST))
    assert (verdict.category, verdict.polarity, verdict.principle) == (category, polarity, principle)
    assert verdict.source == "encoder"
    assert verdict.span is None if category == "none" else verdict.span in turn  # verbatim



def test_an_operator_label_changes_a_later_prediction(encoder, classifier, tmp_path):
    turn = "hmm ok"
    before = classifier.predict(Example(turn, ANSWER, REQUEST))
    assert before.category != "none"  # a bare acknowledgement, which the operator labels none
    label = Example(turn, ANSWER, REQUEST, "none", "neutral", False)
    corrected = load_or_fit(encoder, tmp_path, [label])
    assert corrected.meta["operator_labels"] == 1
    again = corrected.predict(Example("hmm, ok", ANSWER, REQUEST))
    assert (again.category, again.polarity, again.span) == ("none", "neutral", None)
    # Other turns keep their verdicts.
    assert corrected.predict(Example("Perfect, that fixed it, cheers!", ANSWER, REQUEST)).category == "positive"
    assert corrected.predict(Example("ugh, useless", ANSWER, REQUEST)).category == "aware_without_correction"
    # Kept as arrays and JSON, and found again by the same training data.
    saved = next((tmp_path / "natural-classifier").iterdir())
    assert {p.name for p in saved.iterdir()} == {"heads.npz", "heads.json"}
    assert json.loads((saved / "heads.json").read_text())["overrides"][0]["category"] == "none"
    reloaded = load_or_fit(encoder, tmp_path, [label])
    assert reloaded.predict(Example(turn, ANSWER, REQUEST)).category == "none"


def test_the_shipped_corpus_is_consistent():
    rows = read_rows(CORPUS)
    examples = examples_from_rows(rows)
    assert len(examples) >= 700
    assert {e.category for e in examples} == {"repeat_rephrase", "aware_with_correction", "aware_without_correction",
                                              "clarification", "positive", "none"}
    for row in rows:
        for lab in row["labels"]:
            turn = row["messages"][lab["turn"]]["content"]
            assert row["messages"][lab["turn"] - 1]["role"] == "assistant"
            assert (lab["span"] is None) == (lab["category"] == "none") and (lab["span"] is None or lab["span"] in turn)


def test_save_and_load_round_trip(encoder, classifier, tmp_path):
    classifier.save(tmp_path / "m")
    back = NaturalClassifier.load(encoder, tmp_path / "m")
    ex = Example("Nope, it leaves at 9:40, not 10:15.", ANSWER, REQUEST)
    assert back.predict(ex) == classifier.predict(ex)


def test_no_scored_split_is_in_the_corpus():
    """bench/natural.py scores splits the classifier never trained on: none of their labelled turns
    (in their conversations) is in the shipped corpus."""
    bench = Path(__file__).resolve().parents[2] / "bench" / "data"
    scored = [row for name in ("natural_labelled.jsonl", "natural_final4.jsonl") for row in read_rows(bench / name)]
    corpus = {(e.previous, e.answer, e.turn) for e in examples_from_rows(read_rows(CORPUS))}
    held = [(e.previous, e.answer, e.turn) for e in examples_from_rows(scored)]
    assert len(held) > 300
    assert not [h for h in held if h in corpus]
