"""The pipeline's prompt sets from the built-in corpora: a principle's evaluation requests come
from the evaluation corpus by topic, and a domain that names a person is judged on requests
that point at that person."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def corpora(semantic_models):
    from policies.corpus import EVALUATION, load_corpus
    from policies.scope_model import ScopeModels

    return ScopeModels(semantic_models, load_corpus(semantic_models)), load_corpus(semantic_models, EVALUATION)


def test_a_subject_is_evaluated_on_its_topics_requests(corpora):
    from service.distill.pipeline import corpus_prompts

    models, evaluation = corpora
    train, held = corpus_prompts({"domain": "questions about astronomy"}, models, evaluation, n_eval=10)
    assert len(held.in_scope) == 10 and set(held.in_scope) <= set(evaluation.of_topics(["astronomy"]))
    assert held.sources["in_scope"] == {"eval_requests": len(evaluation.of_topics(["astronomy"]))}
    assert not set(held.in_scope) & set(train.in_scope)


def test_a_named_person_is_evaluated_on_requests_to_that_person(corpora):
    from service.distill.pipeline import corpus_prompts

    models, evaluation = corpora
    domain = "text messages to my sister Priya"
    _, held = corpus_prompts({"domain": domain}, models, evaluation, n_eval=10)
    assert len(held.in_scope) == 10
    assert all(models.score(domain, q) >= 0.5 for q in held.in_scope)  # every one points at Priya and is a text
    assert held.sources["in_scope"]["templates"] > 0 and sum(held.sources["in_scope"].values()) == 10
