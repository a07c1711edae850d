"""Is an adapter directory safe and fit to serve? File checks at registration, and a shape check
against the base model that never touches the model that is serving.

Registration validates the copy it is about to store: a LoRA config PEFT can parse with sane
essentials, safetensors weights that load and hold only finite numbers (a diverged run is
refused), no pickled files, a scope.json (policies.adapter_scope) that parses if there is one.
`check_loadable` loads the adapter onto a weightless copy of the base model built on the meta
device, so wrong shapes, unknown target modules and missing or extra LoRA weights are caught in
milliseconds, before a promotion switches anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from adapters.files import TMP_PREFIX, fsync_path
from policies.adapter_scope import FILE as SCOPE, AdapterScope
from adapters.registry.versions import CONFIG, PICKLE_SUFFIXES, WEIGHTS, AdapterRejected, RegistryError, same_base_model


def validate_config(path: Path) -> tuple[dict, dict]:
    """Returns (raw config, LoRA summary). Raises AdapterRejected."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AdapterRejected(f"{CONFIG} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise AdapterRejected(f"{CONFIG} must hold a JSON object")
    peft_type = str(raw.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise AdapterRejected(f"{CONFIG} describes a {raw.get('peft_type')!r} adapter; only LoRA adapters are served")
    from peft import LoraConfig

    try:
        config = LoraConfig.from_pretrained(str(path.parent))
    except Exception as e:  # peft raises several types for a malformed config
        raise AdapterRejected(f"{CONFIG} does not parse as a PEFT LoraConfig: {e}") from e
    # PEFT itself accepts r="abc"; serving would fail much later, so check the essentials here.
    if not isinstance(config, LoraConfig) or not isinstance(config.r, int) or isinstance(config.r, bool) or config.r <= 0:
        raise AdapterRejected(f"{CONFIG}: r must be a positive integer, got {config.r!r}")
    if not isinstance(config.lora_alpha, (int, float)) or isinstance(config.lora_alpha, bool):
        raise AdapterRejected(f"{CONFIG}: lora_alpha must be a number, got {config.lora_alpha!r}")
    if not config.target_modules:
        raise AdapterRejected(f"{CONFIG}: target_modules is empty")
    targets = config.target_modules
    summary = {
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "target_modules": sorted(targets) if not isinstance(targets, str) else targets,
        "task_type": str(config.task_type) if config.task_type else None,
    }
    return raw, summary


def validate_weights(path: Path) -> tuple[str, int]:
    """Loads every tensor with safetensors (a truncated or garbled file fails here) and
    refuses non-finite weights (a diverged run). Returns (sha256, size in bytes)."""
    import torch
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            for key in keys:
                tensor = f.get_tensor(key)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise AdapterRejected(f"{WEIGHTS}: tensor {key} holds NaN or infinite values")
    except AdapterRejected:
        raise
    except Exception as e:  # safetensors raises its own error types for bad headers and sizes
        raise AdapterRejected(f"{WEIGHTS} is not a readable safetensors file: {e}") from e
    if not any("lora_" in k for k in keys):
        raise AdapterRejected(f"{WEIGHTS} holds no LoRA weights (no lora_A/lora_B tensors)")
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest(), path.stat().st_size


def stage_copy(src: Path, root: Path, report: dict | Path | str | None, serving: str | None,
               limits: dict | None = None) -> tuple[Path, dict]:
    """Copy the adapter into a temporary directory in `root` and validate the copy (so what is
    checked is exactly what is stored). `serving` is the base model the registry serves, if known;
    `limits` what its engine can load (check_engine_limits).
    Returns (temp dir, facts for metadata.json)."""
    if not src.is_dir():
        raise AdapterRejected(f"{src} is not a directory")
    pickled = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise AdapterRejected(
            f"refusing {src}: it contains pickled files ({', '.join(pickled[:5])}), which can run code when loaded; "
            f"save the adapter as safetensors (save_pretrained(..., safe_serialization=True)) and remove them"
        )
    missing = [f for f in (WEIGHTS, CONFIG) if not (src / f).is_file()]
    if missing:
        raise AdapterRejected(f"{src} has no {' or '.join(missing)}; an adapter directory holds {WEIGHTS} and {CONFIG}, as PeftModel.save_pretrained writes them")
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=root))
    try:
        for fname in (WEIGHTS, CONFIG, SCOPE, "README.md"):
            if (src / fname).is_file():
                shutil.copyfile(src / fname, tmp / fname)
                fsync_path(tmp / fname)
        if (tmp / SCOPE).is_file():
            try:
                AdapterScope.read(tmp)
            except ValueError as e:  # json.JSONDecodeError is one
                raise AdapterRejected(f"{src / SCOPE} is not an adapter scope: {e}") from e
        report_field: dict | str | None = None
        if isinstance(report, dict):
            try:
                report_field = json.loads(json.dumps(report))  # must be JSON; copy, not alias
            except (TypeError, ValueError) as e:
                raise AdapterRejected(f"evaluation report is not JSON-serialisable: {e}") from e
        elif report is not None:
            rpath = Path(report)
            if not rpath.is_file() or rpath.suffix.lower() in PICKLE_SUFFIXES:
                raise AdapterRejected(f"evaluation report {rpath} is not a readable file")
            report_field = "report" + rpath.suffix
            shutil.copyfile(rpath, tmp / report_field)
            fsync_path(tmp / report_field)
        raw, lora = validate_config(tmp / CONFIG)
        sha, size = validate_weights(tmp / WEIGHTS)
        check_engine_limits(tmp, limits or {})
        trained_on = raw.get("base_model_name_or_path")
        if trained_on and serving and not same_base_model(trained_on, serving):
            raise AdapterRejected(f"adapter was trained on {trained_on}, this server serves {serving}")
        facts = {"base_model": trained_on or serving, "weights_sha256": sha, "weights_bytes": size, "lora": lora, "report": report_field}
        return tmp, facts
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_engine_limits(version_dir: Path, limits: dict) -> None:
    """Raise AdapterRejected for an adapter beyond what the serving engine can load (`limits`
    as the server recorded them: vLLM's max_lora_rank)."""
    max_rank = limits.get("max_lora_rank")
    if not max_rank:
        return
    config = json.loads((Path(version_dir) / CONFIG).read_text())
    rank = max([config.get("r") or 0, *(config.get("rank_pattern") or {}).values()])
    if rank > max_rank:
        raise AdapterRejected(f"LoRA rank {rank} is above the serving engine's max_lora_rank {max_rank}")


def check_loadable(version_dir: Path | str, model: Any) -> None:
    """Raise AdapterRejected unless the adapter loads onto `model`'s architecture.

    Loads the adapter with PEFT onto a weightless copy of the model built on the meta device,
    so shape mismatches, unknown target modules and missing or extra LoRA weights are caught
    without touching (or waiting on) the model that is serving. `model` is a transformers model,
    a PeftModel, or only the base model's config (a `PretrainedConfig` or its `to_dict()`: what a
    process that does not serve, such as the CLI or the refinement job, has). Takes milliseconds.
    """
    import warnings

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

    version_dir = Path(version_dir)
    if isinstance(model, dict):
        model = AutoConfig.for_model(**model)
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    try:
        config = LoraConfig.from_pretrained(str(version_dir))
        config.inference_mode = True
        weights = load_file(str(version_dir / WEIGHTS))
    except Exception as e:
        raise AdapterRejected(f"{version_dir.name} does not load: {e}") from e
    name = "registry_check"
    with warnings.catch_warnings():
        # Copying into meta tensors warns once per parameter; the copy is meant to be a no-op.
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                if isinstance(model, PretrainedConfig):
                    skeleton = AutoModelForCausalLM.from_config(model)
                else:
                    skeleton = type(model)(model.config)
        except Exception as e:
            # Not the adapter's fault: do not let the caller reject it for this.
            raise RegistryError(f"cannot build a weightless copy of {type(model).__name__} to check adapters against: {e}") from e
        try:
            peft_model = get_peft_model(skeleton, config, adapter_name=name)
            result = set_peft_model_state_dict(peft_model, weights, adapter_name=name)
        except Exception as e:
            raise AdapterRejected(f"{version_dir.name} does not fit this base model: {e}") from e
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    missing = [k for k in result.missing_keys if f".{name}." in k]
    if unexpected or missing:
        raise AdapterRejected(
            f"{version_dir.name} does not fit this base model: "
            f"{len(unexpected)} weights match no module (e.g. {unexpected[:1]}), "
            f"{len(missing)} LoRA weights are missing (e.g. {missing[:1]})"
        )
