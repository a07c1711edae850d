"""The request path's adapter scope: a scoped version's adapter never answers a request nobody
judged (no encoder: the base weights), an unscoped one answers everything, and the setting
turns scoping off."""

from __future__ import annotations

from policies.adapter_scope import AdapterScope

Q = [{"role": "user", "content": "Which city is Australia's capital?"}]


def serving_scope(tmp_path, **kw):
    from service.serving.scope import ServingScope
    from service.settings import Settings
    from service.store import Store

    settings = Settings(data_dir=tmp_path, _env_file=None, **kw)
    return ServingScope(settings, Store(settings.db_path))


def test_without_an_encoder_a_scoped_version_answers_with_the_base_weights(tmp_path, caplog):
    scoped, plain = tmp_path / "scoped", tmp_path / "plain"
    scoped.mkdir(), plain.mkdir()
    AdapterScope(requests=["What is the capital of Australia?"]).write(scoped)
    scope = serving_scope(tmp_path / "data")
    scope.error = "OSError: no model"
    scope.ready.set()  # loading finished without an encoder
    assert scope.adapter_applies("refinery@v1", scoped, Q) is False
    assert scope.adapter_applies("refinery@v1", scoped, Q) is False
    assert [r.message for r in caplog.records].count(
        "no sentence encoder (OSError: no model): scoped versions answer with the base weights") == 1
    assert scope.adapter_applies("refinery@v2", plain, Q) is True  # no scope.json: everywhere
    off = serving_scope(tmp_path / "off", adapter_scope=False)
    assert off.adapter_applies("refinery@v1", scoped, Q) is True


def test_with_the_encoder_the_scope_decides(tmp_path, semantic_models):
    scoped = tmp_path / "scoped"
    scoped.mkdir()
    AdapterScope(requests=["What is the capital of Australia?"]).write(scoped)
    scope = serving_scope(tmp_path / "data")
    scope.encoder = semantic_models
    assert scope.adapter_applies("refinery@v1", scoped, Q) is True
    assert scope.adapter_applies("refinery@v1", scoped, [{"role": "user", "content": "Write a haiku about tea."}]) is False


def test_a_principle_version_answers_inside_its_domains(tmp_path, semantic_models):
    """A version that learned a principle: its adapter answers the domain's requests, by the scope
    model, also where in-context principles are matched lexically; the base weights elsewhere."""
    learned = tmp_path / "learned"
    learned.mkdir()
    AdapterScope(domains=[{"domain": "questions about astronomy", "positives": []}]).write(learned)
    scope = serving_scope(tmp_path / "data", scope_matcher="lexical")
    scope.encoder = semantic_models
    ask = lambda q: scope.adapter_applies("refinery@v3", learned, [{"role": "user", "content": q}])  # noqa: E731
    assert ask("Why do stars twinkle at night?") is True
    assert ask("What sign is compatible with a Scorpio?") is False
    assert ask("Write a haiku about tea.") is False
