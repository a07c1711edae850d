"""The refinement job's generations through the serving engine's vLLM replicas, when vLLM is the
engine: baseline answers for synthesis (the base model, or the version serving now) and the
evaluation's answers (the base, in-context prompting, and the candidate adapter, loaded under a
temporary name for its evaluation and unloaded after). So the job needs no second copy of a
large model for generation; training stays local (PEFT, on a GPU when there is one).

The job is another process than the server and must not take over the server's bookkeeping of
the replicas: it only loads and unloads its own temporary names (`eval-...`, without the `@`
of the versions the server manages, so the server's re-sync leaves them alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx


class EngineGenerator:
    def __init__(self, urls: list[str], adapter_root: Path | None = None, engine_adapter_dir: Path | None = None,
                 timeout: float = 600.0, concurrency: int = 8):
        if not urls:
            raise ValueError("no engine replicas configured (REFINERY_ENGINE_URLS)")
        self.urls, self.timeout = urls, timeout
        self.adapter_root = Path(adapter_root).resolve() if adapter_root else None
        self.engine_adapter_dir = engine_adapter_dir
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0))
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="job-generate")
        self._next = itertools.cycle(urls)
        models = self.http.get(urls[0] + "/v1/models").json()["data"]
        self.base = next(m["id"] for m in models if not m.get("parent"))

    @classmethod
    def from_settings(cls, settings) -> "EngineGenerator":
        return cls(settings.engine_url_list, settings.data_dir / "adapters", settings.engine_adapter_dir,
                   settings.engine_timeout_s)

    def _one(self, messages: list[dict], max_tokens: int, model: str) -> str:
        url = next(self._next)
        r = self.http.post(url + "/v1/chat/completions", json={
            "model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0})
        if r.status_code != 200:
            raise RuntimeError(f"{url} refused a generation for {model}: {r.status_code} {r.text[:300]}")
        # Stripped, as adapters.generate strips what it generates: the same answers either way.
        return (r.json()["choices"][0]["message"]["content"] or "").strip()

    def generate(self, conversations: list[list[dict]], max_tokens: int, model: str | None = None) -> list[str]:
        """Greedy answers, in order; `model` a served name (a version id), None for the base."""
        return list(self.pool.map(lambda c: self._one(c, max_tokens, model or self.base), conversations))

    def _engine_path(self, path: Path) -> str:
        p = Path(path).resolve()
        if self.engine_adapter_dir and self.adapter_root and p.is_relative_to(self.adapter_root):
            return str(Path(self.engine_adapter_dir) / p.relative_to(self.adapter_root))
        return str(p)

    @contextlib.contextmanager
    def candidate(self, adapter_dir: Path | str) -> Iterator[str]:
        """The adapter at `adapter_dir` loaded on every replica under a temporary name."""
        name = "eval-" + hashlib.sha256(str(Path(adapter_dir).resolve()).encode()).hexdigest()[:12]
        body = {"lora_name": name, "lora_path": self._engine_path(Path(adapter_dir))}
        loaded = []
        try:
            for url in self.urls:
                r = self.http.post(url + "/v1/load_lora_adapter", json=body)
                if r.status_code != 200 and "already" not in r.text:
                    raise RuntimeError(f"{url} did not load the candidate: {r.status_code} {r.text[:300]}")
                loaded.append(url)
            yield name
        finally:
            for url in loaded:
                with contextlib.suppress(httpx.HTTPError):
                    self.http.post(url + "/v1/unload_lora_adapter", json={"lora_name": name})

    def evaluation_fn(self):
        """`generate_fn` for adapters.evaluate.evaluate_conditions: (conversations, max tokens,
        adapter directory or None for the base) -> answers."""

        def answer(conversations: list[list[dict]], max_tokens: int, adapter_dir: Path | str | None) -> list[str]:
            if adapter_dir is None:
                return self.generate(conversations, max_tokens)
            with self.candidate(adapter_dir) as name:
                return self.generate(conversations, max_tokens, model=name)

        return answer

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.http.close()
