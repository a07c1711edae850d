"""A version's scope: what scope.json may hold, which versions get one, and that the embedded
encoder puts a corrected request's paraphrases inside it and unrelated requests outside."""

from __future__ import annotations

import json

import pytest

from policies.adapter_scope import THRESHOLD, AdapterScope, version_scope


def test_parse_refuses_what_is_not_a_scope():
    assert AdapterScope.parse({"requests": ["a", "a", "b"]}).requests == ["a", "b"]
    assert AdapterScope.parse({"everywhere": "made by hand"}).everywhere == "made by hand"
    assert AdapterScope.parse({"domains": [{"domain": "chess"}]}).domains == [{"domain": "chess", "positives": []}]
    for bad, why in (([], "holds an object"), ({"requests": "a"}, "list of non-empty texts"),
                     ({"requests": [" "]}, "list of non-empty texts"), ({"requests": ["a"], "threshold": 2}, "cosine"),
                     ({"requests": ["a"], "threshold": True}, "cosine"), ({}, "names its requests"),
                     ({"everywhere": 1}, "reason"), ({"domains": [{"domain": ""}]}, "domains is a list"),
                     ({"domains": [{"domain": "chess", "positives": [1]}]}, "domains is a list"),
                     ({"domains": "chess"}, "domains is a list")):
        with pytest.raises(ValueError, match=why):
            AdapterScope.parse(bad)


def test_which_versions_are_scoped(tmp_path):
    (tmp_path / "mixed").mkdir()
    wide = version_scope([{"id": "p-1", "domain": "all requests"}, {"id": "p-2", "domain": "chess"}], ["What is 2+2?"])
    assert wide.everywhere == "it learned principles for every request (p-1)"
    mixed = version_scope([{"id": "p-2", "domain": "chess", "positives": ["Best reply to 1.e4?", "Best reply to 1.e4?"]}],
                          ["What is 2+2?"])
    assert mixed.everywhere is None and mixed.requests == ["What is 2+2?"]
    assert mixed.domains == [{"domain": "chess", "positives": ["Best reply to 1.e4?"]}]
    mixed.write(tmp_path / "mixed")
    assert AdapterScope.read(tmp_path / "mixed") == mixed
    assert version_scope([], ["", " "]).everywhere == "it names no request it learned from"
    scope = version_scope([], ["What is 2+2?", "What is 2+2?", "Who wrote Hamlet?"])
    assert scope.everywhere is None and scope.requests == ["What is 2+2?", "Who wrote Hamlet?"]
    assert scope.threshold == THRESHOLD
    scope.write(tmp_path)
    assert AdapterScope.read(tmp_path) == scope and "domains" not in json.loads((tmp_path / "scope.json").read_text())
    assert json.loads((tmp_path / "scope.json").read_text())["requests"] == scope.requests
    assert AdapterScope.read(tmp_path / "elsewhere").everywhere == "no scope.json beside the adapter"


def test_the_encoder_keeps_paraphrases_in_and_unrelated_requests_out(semantic_models):
    scope = AdapterScope(requests=["What is the capital of Australia?", "Who invented the World Wide Web?"])
    compiled = scope.compile(semantic_models.embed_one)
    for inside in ("Which city is Australia's capital?", "Name the capital city of Australia.",
                   "Who created the WWW?"):
        assert compiled.covers(inside), (inside, compiled.similarity(inside))
    for outside in ("Write a haiku about morning coffee.", "How do I reverse a string in Python?",
                    "Give me three tips for sleeping better.", ""):
        assert not compiled.covers(outside), (outside, compiled.similarity(outside))
    everywhere = AdapterScope.anywhere("made by hand").compile(semantic_models.embed_one)
    assert everywhere.covers("Write a haiku about morning coffee.") and everywhere.vectors is None


def test_a_principle_domain_covers_its_requests_by_the_scope_model(semantic_models):
    from policies.corpus import load_corpus
    from policies.scope_model import ScopeModels

    models = ScopeModels(semantic_models, load_corpus(semantic_models))
    scope = AdapterScope(requests=["What is the capital of Australia?"], domains=[{"domain": "questions about astronomy", "positives": []}])
    compiled = scope.compile(semantic_models.embed_one, models.score)
    for inside in ("How many moons does Jupiter have?", "Why do stars twinkle at night?",
                   "Which city is Australia's capital?"):  # the domain, and the learned request's paraphrase
        assert compiled.covers(inside), inside
    for outside in ("What sign is compatible with a Scorpio?", "How do I bake a lemon drizzle cake?",
                    "Write a haiku about morning coffee."):
        assert not compiled.covers(outside), outside
    # Without a scorer a domain cannot be judged: its adapter answers, as for a version before scopes had domains.
    assert scope.compile(semantic_models.embed_one).covers("How do I bake a lemon drizzle cake?")
