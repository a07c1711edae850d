"""The embedded sentence encoder, made from its wheel in a fresh cache directory: found without
importing its package, extracted and exported once, and giving vectors that mean something."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from policies.encoder import EMBEDDED_NAME, ONNX_FILE, Encoder, embedded_zip, prepare


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    cache = tmp_path_factory.mktemp("fresh-cache")
    return cache, prepare(None, cache)


def test_made_from_the_wheel_in_a_fresh_directory(fresh):
    cache, model_dir = fresh
    assert embedded_zip().name == "model.zip" and embedded_zip().exists()
    assert "all_minilm_l6_v2" not in sys.modules  # its __init__ prints: never imported
    assert model_dir == cache / "encoders" / EMBEDDED_NAME
    assert (model_dir / "config.json").exists() and (model_dir / ONNX_FILE).exists()
    stamp = (model_dir / ONNX_FILE).stat().st_mtime_ns
    assert prepare(None, cache) == model_dir and (model_dir / ONNX_FILE).stat().st_mtime_ns == stamp  # once


def test_vectors_are_unit_length_and_mean_something(fresh):
    enc = Encoder(fresh[1])
    v = enc.embed(["questions about astronomy", "Why does the Moon have phases?", "How do I bake sourdough bread?"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)
    assert v[0] @ v[1] > v[0] @ v[2]
    one = enc.embed_one("Why does the Moon have phases?")
    assert float(one @ v[1]) > 0.999 and enc.embed_one("Why does the Moon have phases?") is one  # cached


def test_kept_vectors_are_computed_once_and_equal_the_request_path(fresh):
    enc = Encoder(fresh[1])
    texts = ["How do f-strings work?", "What is a black hole?"]
    kept = enc.embed_kept(texts, "probe")
    files = list((fresh[1] / "kept-vectors").glob("probe-*.npy"))
    assert len(files) == 1 and np.array_equal(np.load(files[0]), kept)
    stamp = files[0].stat().st_mtime_ns
    assert np.array_equal(enc.embed_kept(texts, "probe"), kept) and files[0].stat().st_mtime_ns == stamp
    assert float(enc.embed_one(texts[1]) @ kept[1]) > 0.9999  # one text at a time, as a request is
    assert not np.array_equal(enc.embed_kept(texts[::-1], "probe"), kept)  # other texts, other file


def test_another_local_sentence_transformers_directory(fresh, tmp_path):
    # REFINERY_ENCODER names a local directory: it is exported the same way, beside a copy.
    model_dir = prepare(str(fresh[1]), tmp_path)
    assert model_dir.parent == tmp_path / "encoders" and (model_dir / ONNX_FILE).exists()
    with pytest.raises(RuntimeError, match="not a local sentence-transformers directory"):
        prepare(str(tmp_path / "nothing-here"), tmp_path)
