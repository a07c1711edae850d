"""The registry's vocabulary: version ids, statuses, what a version is, and the errors.

Shared by the state machine (adapters.registry.registry), the validation of adapter files
(adapters.registry.validate) and everything that reads the registry (the router, the rollout).
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

STATUSES = ("candidate", "canary", "active", "retired", "rejected")
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
METADATA = "metadata.json"
STATE = "state.json"
AUDIT = "audit.jsonl"
BASE_CONFIG = "base_model_config.json"
ENGINE_LIMITS = "engine_limits.json"
# Loading any of these runs pickle, which can execute arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# '@' and '/' are excluded so that a name can never be mistaken for a version id or a path.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
VERSION_RE = re.compile(rf"(?P<name>{NAME_PATTERN})@v(?P<n>[1-9][0-9]*)")
NAME_RE = re.compile(NAME_PATTERN)


class RegistryError(Exception):
    """Every registry error; the message is meant for an operator."""


class NotFound(RegistryError):
    pass


class AdapterRejected(RegistryError):
    """The adapter is unsafe or unusable: pickled, corrupt, not LoRA, other base model, bad shapes."""


class InvalidTransition(RegistryError):
    pass


@dataclass(frozen=True)
class AdapterVersion:
    version_id: str  # NAME@vN
    name: str
    version: int
    path: Path  # the version's directory (load the adapter from here)
    status: str
    canary_share: float | None  # only for status == "canary"
    principles: tuple[str, ...]
    dataset_hash: str | None
    base_model: str | None
    weights_sha256: str
    weights_bytes: int
    lora: dict  # r, lora_alpha, target_modules, task_type from adapter_config.json
    report: dict | str | None  # a dict, or the name of the report file in `path`
    created_at: str  # ISO 8601, UTC
    created_by: str
    source: str | None  # directory it was registered from
    notes: str | None
    status_changed_at: str
    status_reason: str | None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["principles"] = list(self.principles)
        return d


@dataclass(frozen=True)
class Change:
    """One version's status change, as returned by every status operation."""

    version_id: str
    before: str | None
    after: str
    share_before: float | None = None
    share_after: float | None = None


@dataclass(frozen=True)
class Resolution:
    """What a request's `model` string maps to."""

    requested: str
    name: str
    pinned: bool  # True for NAME@vN
    version: AdapterVersion | None  # the pinned version, or NAME's active version
    canary: AdapterVersion | None  # NAME's canary (never set for pinned requests)
    canary_share: float

    def choose(self, sticky_key: str | None = None) -> AdapterVersion | None:
        """The version that serves this request; None means the base model.

        The same sticky key (user or conversation id) always lands on the same side while the
        canary runs; the canary's id is part of the hash so each canary samples other users.
        """
        if self.canary is None or self.canary_share <= 0:
            return self.version
        key = sticky_key if sticky_key is not None else uuid.uuid4().hex
        digest = hashlib.sha256(f"{self.canary.version_id}\0{key}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") / 2**64
        return self.canary if bucket < self.canary_share else self.version


def check_share(share) -> float:
    """A canary share: a number strictly between 0 and 1."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or math.isnan(share) or not 0 < share < 1:
        raise RegistryError(f"canary share must be between 0 and 1 (exclusive), got {share!r}")
    return float(share)


def parse_version_id(version_id: str) -> tuple[str, int] | None:
    m = VERSION_RE.fullmatch(version_id or "")
    return (m["name"], int(m["n"])) if m else None


def same_base_model(a: str, b: str) -> bool:
    """Compare model ids by their last path component, case-insensitively.

    The same model is called "/data/models/SmolLM2-135M-Instruct" by a trainer, "SmolLM2-135M-
    Instruct" by the server and "HuggingFaceTB/SmolLM2-135M-Instruct" on the hub. Names cannot
    prove two models alike; `check_loadable` checks the shapes.
    """
    def key(s: str) -> str:
        return str(s).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()

    return key(a) == key(b)

