"""vLLM replicas over HTTP as Refinery's engine: vLLM decodes and holds the adapters, Refinery
keeps the loop (routing by version, leases, the record of every exchange).

Adapter versions on vLLM, the safe way: every version is loaded under its own name
(`NAME@vN`, via `/v1/load_lora_adapter`) and never reloaded in place (vLLM keeps stale
prefix-cache KV for a name reloaded in place). A version is loaded on every replica that is
up before `load_adapter` returns, so the router switches an alias only once every replica
can serve the new version; a version is unloaded from every replica once its last lease is
back. What is loaded is counted against the replicas' `--max-loras`: a load waits for a
draining version to go, and fails with EngineFull if none is draining.

Replicas are chosen by service.serving.engines.replicas and health-checked here: a replica
coming back (or found without the versions it should hold, as after a restart) gets them
loaded before it takes traffic again. The requests themselves (streaming pass-through,
retries, log-prob scoring) are service.serving.engines.vllm_requests'.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, Sequence

import httpx

from adapters.registry import AdapterRejected, check_loadable
from service.serving.engines.base import Engine, EngineFull, Event, GenJob
from service.serving.engines.leases import Leases
from service.serving.engines.replicas import Replica, ReplicaSet
from service.serving.engines.vllm_requests import ReplicaError, Upstream, error_message

log = logging.getLogger(__name__)

class VLLMEngine(Engine):
    def __init__(self, urls: list[str], tokenizer, config: dict | None, *, adapter_root: Path | None = None,
                 engine_adapter_dir: Path | None = None, max_lora_rank: int = 16, max_loras: int = 2,
                 timeout: float = 600.0, health_s: float = 2.0, wait_s: float = 600.0):
        self.tokenizer = tokenizer
        self.config = config
        self.adapter_root = Path(adapter_root).resolve() if adapter_root else None
        self.engine_adapter_dir = engine_adapter_dir
        self.max_lora_rank, self.max_loras = max_lora_rank, max_loras
        self.timeout, self.health_s = timeout, health_s
        self.replicas = ReplicaSet(urls)
        self.leases = Leases()
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0))
        self._admin = threading.RLock()  # loads, unloads and a replica's re-sync, one at a time
        self._freed = threading.Condition()
        self._janitor = ThreadPoolExecutor(1, thread_name_prefix="vllm-unload")
        self._fanout = ThreadPoolExecutor(max(2, len(urls)), thread_name_prefix="vllm-admin")
        self._background = ThreadPoolExecutor(1, thread_name_prefix="vllm-score")
        self._stop = threading.Event()
        self.model_id = self._wait_for_base(wait_s)
        self.upstream = Upstream(self.replicas, self._http, tokenizer, self.model_id, timeout)
        self._health = threading.Thread(target=self._health_loop, name="vllm-health", daemon=True)
        self._health.start()

    @classmethod
    def from_settings(cls, settings) -> "VLLMEngine":
        from transformers import AutoConfig, AutoTokenizer

        from adapters.model import resolve_model_path

        # Only the tokenizer (context limits, log-prob scoring) and the config (adapter shape
        # checks) are read here; the weights stay with vLLM.
        path, _ = resolve_model_path(settings.model, settings.model_cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path).to_dict()
        return cls(settings.engine_url_list, tokenizer, config, adapter_root=settings.data_dir / "adapters",
                   engine_adapter_dir=settings.engine_adapter_dir, max_lora_rank=settings.engine_max_lora_rank,
                   max_loras=settings.engine_max_loras, timeout=settings.engine_timeout_s,
                   health_s=settings.engine_health_s)

    # -- replicas ------------------------------------------------------------------------
    def _wait_for_base(self, wait_s: float) -> str:
        """The base model's served name, once some replica is up."""
        deadline = time.monotonic() + wait_s
        while True:
            for r in self.replicas.replicas:
                self._check(r)
            for r in self.replicas.up():
                models = self._http.get(r.url + "/v1/models", timeout=5).json()["data"]
                bases = [m["id"] for m in models if not m.get("parent")]
                if bases:
                    return bases[0]
            if time.monotonic() > deadline:
                raise RuntimeError("no vLLM replica answered: " + "; ".join(
                    f"{r.url}: {r.error}" for r in self.replicas.replicas))
            time.sleep(0.5)

    def _health_loop(self) -> None:
        while not self._stop.wait(self.health_s):
            for r in self.replicas.replicas:
                try:
                    self._check(r)
                except Exception:  # never let the loop die
                    log.exception("health check of %s failed", r.url)

    def _check(self, replica: Replica) -> None:
        """Health-check one replica; bring it in line with what should be loaded before it
        takes (or goes on taking) traffic."""
        # Under the admin lock: what the replica lists must be compared with what is loaded
        # at the same moment (a load finishing in between would look like a lost version).
        with self._admin:
            try:
                self._http.get(replica.url + "/health", timeout=5).raise_for_status()
                models = self._http.get(replica.url + "/v1/models", timeout=5).json()["data"]
            except Exception as exc:
                if replica.up:
                    log.warning("replica %s is down: %s", replica.url, exc)
                self.replicas.mark_down(replica, f"health check failed: {exc}")
                return
            present = {m["id"] for m in models if m.get("parent")}
            wanted = dict(self.leases.loaded)
            missing = [n for n in wanted if n not in present]
            if replica.up and missing:
                log.warning("replica %s lost %s; reloading before it serves again", replica.url, missing)
                self.replicas.mark_down(replica, f"missing {missing}")
            try:
                for name in missing:
                    self._load_on(replica, name, wanted[name])
                for name in present - set(wanted):
                    if "@" in name:  # versions only this loop loads (operators' own names stay)
                        self._unload_on(replica, name)
            except Exception as exc:
                self.replicas.mark_down(replica, f"could not load {missing}: {exc}")
                return
            replica.loaded = set(wanted) | {n for n in present if "@" not in n}
            if not replica.up:
                log.info("replica %s is up with %s", replica.url, sorted(wanted))
                self.replicas.mark_up(replica)

    def health(self) -> dict:
        reps = [r.as_dict() for r in self.replicas.replicas]
        return {"kind": "vllm", "up": any(r["up"] for r in reps), "replicas": reps}

    # -- adapter versions ------------------------------------------------------------------
    @property
    def adapters(self) -> dict[str, str]:
        return dict(self.leases.loaded)

    def base_config(self) -> dict | None:
        return self.config

    def limits(self) -> dict:
        return {"max_lora_rank": self.max_lora_rank, "max_loras": self.max_loras}

    def acquire(self, name: str | None) -> None:
        self.leases.acquire(name)

    def release(self, name: str | None) -> None:
        if self.leases.release(name):
            self._janitor.submit(self._sweep)

    def keep_loaded(self, name: str) -> bool:
        return self.leases.keep_loaded(name)

    def unload_adapter(self, name: str) -> None:
        self.leases.request_unload(name)
        self._janitor.submit(self._sweep)

    def _engine_path(self, path: str) -> str:
        """The adapter's directory as the replicas see it (REFINERY_ENGINE_ADAPTER_DIR)."""
        p = Path(path).resolve()
        if self.engine_adapter_dir and self.adapter_root and p.is_relative_to(self.adapter_root):
            return str(Path(self.engine_adapter_dir) / p.relative_to(self.adapter_root))
        return str(p)

    def check_servable(self, path: str) -> None:
        """Raise AdapterRejected for an adapter the replicas cannot serve: a rank above their
        --max-lora-rank, or shapes of another base model."""
        try:
            cfg = json.loads((Path(path) / "adapter_config.json").read_text())
        except (OSError, ValueError) as exc:
            raise AdapterRejected(f"{path} has no readable adapter_config.json: {exc}") from exc
        rank = max([cfg.get("r") or 0, *(cfg.get("rank_pattern") or {}).values()])
        if rank > self.max_lora_rank:
            raise AdapterRejected(f"LoRA rank {rank} is above the engine's max_lora_rank {self.max_lora_rank}")
        if self.config is not None:
            check_loadable(path, self.config)

    def load_adapter(self, name: str, path: str) -> Future:
        self.check_servable(path)
        deadline = time.monotonic() + self.timeout
        while True:
            with self._admin:
                if self.leases.keep_loaded(name):
                    break
                used = max([len(self.leases.loaded)] + [len(r.loaded) for r in self.replicas.up()])
                if used < self.max_loras:
                    self._load_everywhere(name, path)
                    break
                draining = self.leases.draining()
            if time.monotonic() > deadline or not draining:
                raise EngineFull(f"the engine holds {used} adapter versions, its limit (max_loras {self.max_loras}); "
                                 f"loaded: {sorted(self.leases.loaded)}")
            with self._freed:  # a version is draining: its unload frees a slot
                self._freed.wait(0.5)
        done: Future = Future()
        done.set_result(None)
        return done

    def _load_everywhere(self, name: str, path: str) -> None:
        live = self.replicas.up()
        if not live:
            raise RuntimeError("no engine replica is up")
        results = list(self._fanout.map(lambda r: self._try(lambda: self._load_on(r, name, path)), live))
        failures = [exc for exc in results if exc is not None]
        if failures and (len(failures) == len(live) or not all(isinstance(e, ReplicaError) for e in failures)):
            for r, exc in zip(live, results):
                if exc is None:
                    self._try(lambda r=r: self._unload_on(r, name))
            raise failures[0]
        for r, exc in zip(live, results):
            if isinstance(exc, ReplicaError):  # it left; it gets the version when it rejoins
                self.replicas.mark_down(r, str(exc))
        self.leases.add(name, path)

    @staticmethod
    def _try(fn) -> Exception | None:
        try:
            fn()
            return None
        except Exception as exc:
            return exc

    def _load_on(self, replica: Replica, name: str, path: str) -> None:
        body = {"lora_name": name, "lora_path": self._engine_path(path)}
        try:
            resp = self._http.post(replica.url + "/v1/load_lora_adapter", json=body, timeout=self.timeout)
        except httpx.TransportError as exc:
            raise ReplicaError(f"{replica.url}: {exc}") from exc
        if resp.status_code != 200 and "already" not in resp.text:  # a version's files never change
            raise RuntimeError(f"{replica.url} did not load {name}: {resp.status_code} {error_message(resp)}")
        replica.loaded.add(name)

    def _unload_on(self, replica: Replica, name: str) -> None:
        resp = self._http.post(replica.url + "/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60)
        if resp.status_code != 200 and "not" not in resp.text.lower():
            raise RuntimeError(f"{replica.url} did not unload {name}: {resp.status_code} {error_message(resp)}")
        replica.loaded.discard(name)

    def _sweep(self) -> None:
        """Unload, from every replica, the versions whose last lease is back."""
        with self._admin:
            for name in self.leases.take_idle():
                for r in self.replicas.replicas:
                    if name in r.loaded:
                        exc = self._try(lambda r=r: self._unload_on(r, name))
                        if exc is not None:  # still counted on that replica; the health check retries
                            log.warning("unloading %s from %s failed: %s", name, r.url, exc)
        with self._freed:
            self._freed.notify_all()

    # -- generation ----------------------------------------------------------------------
    def encode_chat(self, messages: list[dict]) -> list[int]:
        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(enc["input_ids"])

    def stream(self, job: GenJob) -> AsyncIterator[Event]:
        return self.upstream.stream(job)

    def generate_blocking(self, messages: list[dict], max_tokens: int, adapter: str | None = None,
                          timeout: float = 600) -> str:
        job = GenJob([], max_tokens, 0.0, 1.0, adapter=adapter, messages=messages)
        self.acquire(adapter)
        try:
            out = self.upstream.post_any("/v1/chat/completions", self.upstream.body(job, stream=False))
        finally:
            self.release(adapter)
        return out["choices"][0]["message"]["content"] or ""

    def score_followups(self, conversations: Sequence[list[dict]], adapter: str | None = None) -> Future:
        convs = [list(c) for c in conversations]
        return self._background.submit(self.upstream.flr, convs, adapter)

    def close(self) -> None:
        self._stop.set()
        for pool in (self._janitor, self._fanout, self._background):
            pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
