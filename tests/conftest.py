"""Shared fixtures: the embedded model (converted once per cache) and a tiny random model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Converted embedded weights are reused across runs (and across tests in one run).
MODEL_CACHE = Path(os.environ.get("REFINERY_TEST_MODEL_CACHE", REPO / ".cache" / "models"))
# Commands and servers the tests start find the converted models (the chat model, the sentence
# encoder and its fitted classifier) there instead of converting them again under a temp dir.
os.environ.setdefault("REFINERY_MODEL_CACHE", str(MODEL_CACHE))


@pytest.fixture(scope="session")
def model_cache() -> Path:
    return MODEL_CACHE


@pytest.fixture(scope="session")
def embedded_model_dir(model_cache) -> Path:
    """The embedded SmolLM2-135M-Instruct as safetensors (converted from its GGUF once)."""
    from adapters.model import convert_embedded

    return convert_embedded(model_cache)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A 2-layer randomly initialised Llama with the embedded model's tokenizer."""
    from tests.fixtures.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), tokenizer_source=embedded_model_dir)


@pytest.fixture(scope="session")
def semantic_models(model_cache):
    """The sentence encoder, the natural-feedback classifier and the corpus's vectors, made once
    in the cache (about half a minute on a fresh machine), so servers a test starts load them in
    a second or two."""
    from policies.corpus import load_corpus
    from policies.encoder import load_encoder
    from policies.natural import load_or_fit

    encoder = load_encoder(None, model_cache)
    load_or_fit(encoder, model_cache)
    load_corpus(encoder)
    return encoder


@pytest.fixture()
def tiny_client(tmp_path, tiny_model_dir, model_cache):
    """A TestClient on an app serving the tiny random model, its store in a temporary file."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from tests.fixtures.app import wait_healthy

    settings = Settings(data_dir=tmp_path, model=str(tiny_model_dir), model_cache=model_cache,
                        _env_file=None, max_tokens_limit=64, default_max_tokens=8,
                        background_analysis=False,  # so a test sees only what its requests changed
                        scope_matcher="lexical")  # deterministic; the encoder's scope has tests of its own
    with TestClient(create_app(settings)) as client:
        wait_healthy(client)
        yield client


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, embedded_model_dir, model_cache):
    """A real uvicorn server with the embedded model, shared by a test module."""
    from tests.fixtures.server import LiveServer

    server = LiveServer(tmp_path_factory.mktemp("live"), model_cache).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vllm_replicas(tmp_path_factory, embedded_model_dir):
    """Two real vLLM replicas of the embedded model on loopback, shared by the session's vLLM
    tests (each takes about a minute to start; they start together)."""
    from tests.fixtures.vllm import VLLMServer, require_vllm

    require_vllm()
    logs = tmp_path_factory.mktemp("vllm-logs")
    servers = [VLLMServer(embedded_model_dir, logs).start() for _ in range(2)]
    try:
        for s in servers:
            s.wait()
        yield servers
    finally:
        for s in servers:
            s.stop()
