"""What every engine offers the rest of the service, and the events a generation yields.

Refinery's loop (the chat service, the router, the rollout, the analyst) talks to an engine
through this interface only, so the same loop runs in front of the embedded engine
(service.serving.engines.embedded: transformers + PEFT in this process) or in front of vLLM
replicas over HTTP (service.serving.engines.vllm).

An engine holds adapter versions under their own names (`NAME@vN`) and leases on them: a
request takes a lease before it is queued and returns it when its answer is stored; a version
asked to unload goes only once its last lease is back, so a request always finishes on the
version it was routed to.
"""

from __future__ import annotations

import abc
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Sequence


@dataclass
class Delta:
    text: str


@dataclass
class Finished:
    finish_reason: str  # "stop" | "length" | "cancelled"
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    message: str
    status: int = 500  # what the client is told: an engine's own 4xx stays a 4xx
    code: str = "generation_failed"


Event = Delta | Finished | Failed


class EngineFull(RuntimeError):
    """No room for one more adapter version on the engine (not the adapter's fault: it is not
    rejected for this; unload something, or wait for a version to drain)."""


@dataclass(eq=False)  # identity semantics: two equal-looking requests are still two requests
class GenJob:
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    adapter: str | None = None
    emit: Callable[[Event], None] = lambda ev: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    messages: list[dict] | None = None  # the chat as rendered into prompt_ids (what a remote engine is sent)
    sticky_key: str | None = None  # requests of one conversation go to one replica (its prefix cache)


class Engine(abc.ABC):
    """The engine interface. `model_id` names the base model as clients see it."""

    model_id: str

    # -- generation ----------------------------------------------------------------------
    @abc.abstractmethod
    def encode_chat(self, messages: list[dict]) -> list[int]:
        """The prompt's token ids with the chat template applied (what the context limit counts)."""

    @abc.abstractmethod
    def stream(self, job: GenJob) -> AsyncIterator[Event]:
        """Yield the job's events, ending with Finished or Failed; closing the iterator cancels it."""

    @abc.abstractmethod
    def generate_blocking(self, messages: list[dict], max_tokens: int, adapter: str | None = None,
                          timeout: float = 600) -> str:
        """Greedy answer for callers outside the event loop (the teacher wrapper, jobs)."""

    @abc.abstractmethod
    def score_followups(self, conversations: Sequence[list[dict]], adapter: str | None = None) -> Future:
        """Follow-up likelihood (adapters.flr) of each conversation's last answer, as `adapter`
        (None: the base model), run without delaying requests. A Future of list[float]."""

    # -- adapter versions ----------------------------------------------------------------
    @property
    @abc.abstractmethod
    def adapters(self) -> dict[str, str]:
        """Loaded versions -> the directory each came from."""

    @property
    def adapter_loads(self) -> dict[str, int]:
        """How loads went, by kind, for /metrics."""
        return {}

    def base_config(self) -> dict | None:
        """The base model's config (a transformers config dict), for the registry's shape checks."""
        return None

    def limits(self) -> dict:
        """What adapters this engine can serve ({"max_lora_rank": 16, ...}); {} = no limit known."""
        return {}

    @abc.abstractmethod
    def load_adapter(self, name: str, path: str) -> Future:
        """Load the adapter at `path` (as this process sees it) under `name`. A Future of None;
        AdapterRejected (raised or set) when this engine cannot serve it (shapes, rank, base)."""

    @abc.abstractmethod
    def unload_adapter(self, name: str) -> None:
        """Unload `name` once no request holds it; requests in flight finish on it first."""

    @abc.abstractmethod
    def acquire(self, name: str | None) -> None:
        """Take a lease on a loaded version (KeyError if it is not loaded); None is the base."""

    @abc.abstractmethod
    def release(self, name: str | None) -> None:
        """Return a lease."""

    @abc.abstractmethod
    def keep_loaded(self, name: str) -> bool:
        """True if `name` is loaded, and then it stays (a pending unload is called off)."""

    # -- running -------------------------------------------------------------------------
    def health(self) -> dict:
        """What /health reports about the engine; "up" False means no request can be served."""
        return {"kind": type(self).__name__, "up": True}

    def close(self) -> None:
        """Stop the engine; requests still running fail rather than hang."""
