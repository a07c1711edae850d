"""Scope by meaning on sentences of no split: a principle's scope model takes the requests of its
domain that never name it, and leaves near-miss and unrelated requests alone, where word overlap
cannot tell them apart."""

from __future__ import annotations

import numpy as np
import pytest

from policies.scope import ScopeMatcher, lexical_score

CASES = [
    ("questions about astronomy", "How many moons does Jupiter have?", True),
    ("questions about astronomy", "Why do stars twinkle at night?", True),
    ("questions about astronomy", "What sign is compatible with a Scorpio?", False),  # astrology
    ("questions about astronomy", "How do I bake a lemon drizzle cake?", False),
    ("questions about astronomy", "Who won the 2010 World Cup?", False),
    ("emails to my landlord", "Draft an email to my landlord asking him to fix the broken radiator", True),
    ("emails to my landlord", "Can you write my landlord a short email saying the rent will be a day late?", True),
    ("emails to my landlord", "Write an email to my dentist rescheduling my appointment", False),
    ("emails to my landlord", "Write a text to my sister wishing her happy birthday", False),
    ("cooking and recipes", "What can I cook tonight with leftover rice and two eggs?", True),
    ("cooking and recipes", "How many calories should I eat a day to lose weight?", False),  # nutrition
    ("Python programming questions", "Why does my list comprehension raise a NameError?", True),
    ("Python programming questions", "How do I read a JSON file with the standard library?", True),
    ("Python programming questions", "How do I write a for loop in Rust?", False),
]


@pytest.fixture(scope="module")
def models(model_cache):
    from policies.corpus import load_corpus
    from policies.encoder import load_encoder
    from policies.scope_model import ScopeModels

    encoder = load_encoder(None, model_cache)
    return ScopeModels(encoder, load_corpus(encoder))


@pytest.mark.parametrize("domain, request_text, inside", CASES)
def test_scope_by_meaning(models, domain, request_text, inside):
    matcher = ScopeMatcher(scorer=models.score)
    assert matcher.in_scope(domain, request_text) is inside


def test_word_overlap_misses_what_the_encoder_finds(models):
    # These never name their domain, so the lexical matcher applies the principle to none of them.
    hidden = [(d, q) for d, q, inside in CASES if inside and d in ("questions about astronomy",
                                                                    "Python programming questions")]
    assert all(lexical_score(d, q) < 0.5 for d, q in hidden)
    assert all(models.score(d, q) >= 0.5 for d, q in hidden)


def test_the_model_names_its_topics_and_its_neighbours(models):
    m = models.model("questions about astronomy")
    assert m.topics == ["astronomy"] and "astrology" in m.near_topics
    assert models.model("questions about astronomy") is m  # fitted once per domain
    vectors = models.encoder.embed(["How many moons does Jupiter have?", "Who won the 2010 World Cup?"])
    p = m.probability(vectors)
    assert p.shape == (2,) and p[0] > 0.5 > p[1]


def test_evidence_requests_join_the_positives(models):
    domain = "messages to my band about rehearsals"
    request = "Tell the guys we're moving Thursday's practice to the garage at 7"
    plain = models.score(domain, request)
    with_evidence = models.score(domain, request, positives=("Let everyone know practice is cancelled this week",
                                                              "Remind the band to bring their own cables on Sunday"))
    assert with_evidence > plain


def test_a_global_domain_applies_everywhere_without_scoring():
    calls = []
    matcher = ScopeMatcher(scorer=lambda d, t: calls.append(t) or 0.0)
    assert matcher.in_scope("all requests", "anything at all") is True and calls == []


def test_corpus_vectors_are_kept_on_disk(models):
    from policies.corpus import TRAINING, load_corpus

    cached = list((models.encoder.model_dir / "kept-vectors").glob(f"corpus-{TRAINING.stem}-*.npy"))
    assert cached and np.load(cached[0]).shape == models.corpus.vectors.shape
    assert load_corpus(models.encoder) is models.corpus  # once per process


def test_a_domain_that_names_a_person_needs_the_request_to_point_at_them():
    from policies.scope_model import audience_of

    a = audience_of("emails to my accountant Ms Varga")
    assert a is not None and a.names == ("varga",) and a.relations == ("accountant",)
    assert a.named_in("Can you email Ms Varga my receipts summary?")
    assert a.named_in("write my accountant a quick email about the VAT return")
    assert not a.named_in("Email my old accountant, Mr Doyle, asking for my files")  # somebody else
    assert not a.named_in("Write an email to my plumber about the leak")
    assert audience_of("emails to my landlord") is None and audience_of("questions about astronomy") is None


NAMED = [
    ("emails to my accountant Ms Varga", "Draft an email to Ms Varga saying the bank statements are attached", True),
    ("emails to my accountant Ms Varga", "write to my accountant asking when the tax return is due, by email", True),
    ("emails to my accountant Ms Varga", "Write an email to my dentist rescheduling my appointment", False),
    ("emails to my accountant Ms Varga", "Email my old accountant, Mr Doyle, asking for my files back", False),
    ("emails to my accountant Ms Varga", "How much does an accountant charge for a self-assessment return?", False),
]


@pytest.mark.parametrize("domain, request_text, inside", NAMED)
def test_scope_of_a_named_person(models, domain, request_text, inside):
    assert (models.score(domain, request_text) >= 0.5) is inside


def test_the_two_corpora_share_no_request():
    """The evaluation corpus grades adapters trained on the training corpus: no request is in both."""
    import json

    from policies.corpus import EVALUATION, TRAINING

    read = lambda p: {json.loads(line)["prompt"].strip().lower() for line in p.read_text().splitlines() if line.strip()}  # noqa: E731
    assert not read(TRAINING) & read(EVALUATION)
