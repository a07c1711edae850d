"""Shared fixtures: the embedded model (converted once per cache) and a tiny random model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Converted embedded weights are reused across runs (and across tests in one run).
MODEL_CACHE = Path(os.environ.get("REFINERY_TEST_MODEL_CACHE", REPO / ".cache" / "models"))


@pytest.fixture(scope="session")
def model_cache() -> Path:
    return MODEL_CACHE


@pytest.fixture(scope="session")
def embedded_model_dir(model_cache) -> Path:
    """The embedded SmolLM2-135M-Instruct as safetensors (converted from its GGUF once)."""
    from adapters.base import convert_embedded

    return convert_embedded(model_cache)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A 2-layer randomly initialised Llama with the embedded model's tokenizer."""
    from adapters.base import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), tokenizer_source=embedded_model_dir)
