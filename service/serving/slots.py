"""LoRA slots and leases: which adapter versions are loaded on the model, who is using them, and
how a version gets its layers.

A lease is held by every request that will run on an adapter version, from before it is queued
until its answer is stored; a version asked to unload goes only when its last lease is returned,
so requests in flight finish on the version they were routed to (the same lease table as a
remote engine's, service.serving.engines.leases).

Versions live in slots: one set of LoRA layers on the model (a PEFT adapter named `slot<N>`)
serves one version at a time. Loading a version with PEFT walks the whole module tree (about
half a second on the embedded model, on the decoding thread); copying its weights into an idle
slot of the same structure takes milliseconds, so a promotion or a rollback between versions
trained by the same recipe barely touches decoding. Idle slots are kept (at most
`max_idle_slots`, a few MB each) while some version is served; with none served, the plain
base model comes back.

Everything that touches the model's layers (`load`, `unload_idle`, `select`) runs on the
engine's decoding thread, between steps; leases are taken and returned from any thread.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from service.serving.engines.leases import Leases


def _return_freed_memory() -> None:
    """Hand the pages an unloaded adapter freed back to the system (glibc keeps freed memory in
    its arenas otherwise, and resident memory creeps up over hundreds of swaps)."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


# Adapter-config fields that do not change the LoRA layers' structure or their forward pass in
# inference: two adapters equal in everything else (and in their weights' names and shapes)
# can share one set of LoRA layers, the second one's weights copied into the first one's.
_NOT_STRUCTURAL = {"base_model_name_or_path", "revision", "inference_mode", "peft_version", "lora_dropout",
                   "task_type", "auto_mapping", "init_lora_weights"}
_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


@dataclass
class PreparedAdapter:
    """An adapter read from disk off the engine thread. `signature` (None when the adapter is
    not plain LoRA) names its structure: config fields that shape the layers, weight names,
    shapes and dtypes."""

    path: str
    signature: str | None = None
    tensors: dict[str, torch.Tensor] | None = None


def prepare_adapter(path: str | Path) -> PreparedAdapter:
    path = str(path)
    try:
        from safetensors.torch import load_file

        config = json.loads((Path(path) / "adapter_config.json").read_text())
        tensors = load_file(str(Path(path) / "adapter_model.safetensors"))
    except Exception:  # PEFT's own load reports what is wrong with it
        return PreparedAdapter(path)
    plain = (config.get("peft_type") == "LORA" and not config.get("use_dora") and not config.get("modules_to_save")
             and not config.get("lora_bias") and all(k.endswith(_LORA_SUFFIXES) for k in tensors))
    if not plain:
        return PreparedAdapter(path)
    shape = {k: v for k, v in config.items() if k not in _NOT_STRUCTURAL}
    names = sorted((k, list(t.shape), str(t.dtype)) for k, t in tensors.items())
    signature = hashlib.sha256(json.dumps([shape, names], sort_keys=True, default=str).encode()).hexdigest()
    return PreparedAdapter(path, signature, tensors)


@dataclass
class _Slot:
    """One set of LoRA layers on the model (a PEFT adapter named `slot<N>`): it serves one
    version at a time; when that version is unloaded it waits, idle, for the next version with
    the same structure, which only has to copy its weights in."""

    signature: str | None
    params: dict[str, torch.nn.Parameter] | None  # adapter-file key -> the slot's parameter


class AdapterSlots:
    """The adapter versions loaded on one model, their leases and their slots."""

    def __init__(self, model):
        self.model = model  # the base model, or a PeftModel wrapping it while slots exist
        self.leases = Leases()  # the loaded versions and who holds them
        self.adapter_loads: collections.Counter[str] = collections.Counter()  # "peft" | "copy"
        self.max_idle_slots = 2
        self._slots: dict[str, _Slot] = {}
        self._slot_of: dict[str, str] = {}  # version -> slot
        self._idle: list[str] = []  # slots serving nothing, oldest first
        self._known: set[str] = set()  # signatures PEFT has loaded onto this model
        self._slot_counter = 0

    @property
    def adapters(self) -> dict[str, str]:
        """Loaded version -> the directory it came from."""
        return self.leases.loaded

    # -- leases (any thread) -------------------------------------------------------------------
    def acquire(self, name: str | None) -> None:
        self.leases.acquire(name)

    def release(self, name: str | None) -> bool:
        """Return a lease; True when that was the last one of a version waiting to unload."""
        return self.leases.release(name)

    def keep_loaded(self, name: str) -> bool:
        """True if `name` is loaded, and then it stays: an unload still waiting for its leases
        is called off (a version rolled back to while its last requests were draining)."""
        return self.leases.keep_loaded(name)

    def request_unload(self, name: str) -> None:
        """Unload `name` once no request holds it (at the engine's next `unload_idle`)."""
        self.leases.request_unload(name)

    def fits(self, prepared: PreparedAdapter) -> bool:
        """True if an adapter of this exact structure has already loaded onto this model."""
        return prepared.signature is not None and prepared.signature in self._known

    # -- layers (the engine thread) --------------------------------------------------------------
    def load(self, name: str, prepared: PreparedAdapter) -> None:
        if self.keep_loaded(name):
            return
        reuse = [s for s in self._idle if prepared.signature and self._slots[s].signature == prepared.signature]
        if reuse:
            slot = reuse[-1]
            params = self._slots[slot].params
            with torch.no_grad():
                for key, tensor in prepared.tensors.items():
                    params[key].copy_(tensor)
            self._idle.remove(slot)
            self.adapter_loads["copy"] += 1
        else:
            slot = self._new_slot(prepared)
            self.adapter_loads["peft"] += 1
        self._slot_of[name] = slot
        self.leases.add(name, prepared.path)

    def _new_slot(self, prepared: PreparedAdapter) -> str:
        from peft import PeftModel

        self._slot_counter += 1
        slot = f"slot{self._slot_counter}"
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(prepared.path, adapter_name=slot)
        else:
            self.model = PeftModel.from_pretrained(self.model, prepared.path, adapter_name=slot)
        self.model.eval()
        params = None
        if prepared.signature is not None:
            named = dict(self.model.named_parameters())
            params = {k: named.get(k[: -len(".weight")] + f".{slot}.weight") for k in prepared.tensors}
            if any(p is None for p in params.values()):  # laid out unlike plain LoRA: never reuse it
                params = None
            else:
                self._known.add(prepared.signature)
        self._slots[slot] = _Slot(prepared.signature if params else None, params)
        return slot

    def _drop_slot(self, slot: str) -> None:
        del self._slots[slot]
        if len(self.model.peft_config) == 1:
            # The last one: take the LoRA layers out and serve the plain base again.
            self.model = self.model.unload()
        else:
            self.model.delete_adapter(slot)

    def unload_idle(self) -> None:
        """Unload every version asked to unload whose last lease is back."""
        ready = self.leases.take_idle()
        dropped = False
        for name in ready:
            slot = self._slot_of.pop(name, None)
            if slot is None:
                continue
            if self._slots[slot].signature is not None:
                self._idle.append(slot)
            else:
                self._drop_slot(slot)
                dropped = True
        # Idle slots are kept for the next version while some version is served (a few MB
        # each, at most max_idle_slots of them); with none served the plain base comes back.
        keep = self.max_idle_slots if self._slot_of else 0
        while len(self._idle) > keep:
            self._drop_slot(self._idle.pop(0))
            dropped = True
        if dropped:
            _return_freed_memory()

    def forward_kwargs(self, adapters: Sequence[str | None]) -> dict:
        """Per-row adapter choice for PEFT's mixed-adapter forward; each row runs on exactly
        the version its request was routed to (None: the base model)."""
        if not self._slots:
            return {}
        return {"adapter_names": [self._slot_of[a] if a else "__base__" for a in adapters]}

    def select(self, adapter: str | None):
        """Context for work that runs the model as one version: `adapter`, or the base (None)."""
        if adapter is not None:
            if adapter not in self._slot_of:
                raise KeyError(f"adapter {adapter!r} is not loaded")
            self.model.set_adapter(self._slot_of[adapter])
            return contextlib.nullcontext()
        if self._slots:
            return self.model.disable_adapter()
        return contextlib.nullcontext()
