"""The scope check on the request path: which approved in-context principles cover a request.

Scores come from the principles' scope models on the sentence encoder (policies.scope_model),
each calibrated with the built-in corpus and the requests its principle's evidence came from.
The encoder, the corpus vectors and the models are loaded in a background thread at start-up
(about half a minute the first time, a second or two after); until then, and wherever the
encoder cannot load, the lexical score decides, and the log says so once. A request is embedded
at most once (the vector is cached by text), in the worker thread that prepares the request.

The same encoder decides whether a version's adapter answers a request at all: a version
carries the requests its corrections, complaints and thumbs came from and the domains of its
principles (policies.adapter_scope), and a request far from all of those requests and outside
all of those domains (by the same scope models) is answered by the base weights.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from policies.adapter_scope import AdapterScope, CompiledScope
from policies.corpus import load_corpus
from policies.encoder import load_encoder
from policies.scope import ScopeMatcher, is_global, lexical_score
from policies.scope_model import ScopeModels
from policies.text import last_user_text
from service.settings import Settings
from service.store import Store

log = logging.getLogger(__name__)

ENCODER_WAIT_S = 60.0  # how long a request for a scoped version waits for the encoder at start-up


class ServingScope:
    def __init__(self, settings: Settings, store: Store, llm=None, on_failure=None):
        self.settings, self.store = settings, store
        self.models: ScopeModels | None = None
        self.encoder = None  # also what adapter scopes embed with (policies.adapter_scope)
        self._adapter_scopes: dict[str, AdapterScope] = {}  # version id -> its scope.json
        self._compiled_scopes: dict[str, CompiledScope] = {}  # version id -> its scope with vectors
        self._version_models: ScopeModels | None = None  # for version scopes, when in-context matching is lexical
        self._warned_no_encoder = False
        self.error: str | None = None
        self._evidence: dict[str, tuple[str, ...]] = {}  # domain -> requests its principles came from
        self._seen: dict[str, float] = {}  # principle id -> its `updated` when its evidence was read
        self._lock = threading.Lock()
        self.matcher = ScopeMatcher(llm=llm, on_failure=on_failure, scorer=self.score,
                                    ask_band=(0.2, 0.8))
        self.ready = threading.Event()

    def start(self) -> None:
        if self.settings.scope_matcher != "encoder" and not self.settings.adapter_scope:
            self.ready.set()
            return
        threading.Thread(target=self.load, name="refinery-scope-load", daemon=True).start()

    def load(self) -> None:
        try:
            encoder = load_encoder(self.settings.encoder, self.settings.model_cache_dir)
            self.encoder = encoder
            if self.settings.scope_matcher != "encoder":
                return
            models = ScopeModels(encoder, load_corpus(encoder))
            for p in self.store.principles.approved_for_prompt():
                if not is_global(p["domain"]):
                    models.model(p["domain"], self._positives(p))
            self.models = models
        except Exception as exc:  # the lexical score keeps deciding; /admin says why
            log.exception("the sentence encoder did not load; scope checks stay lexical")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()

    def _positives(self, principle: dict) -> tuple[str, ...]:
        """The requests a principle's evidence came from (its own examples of its domain)."""
        with self._lock:
            if self._seen.get(principle["id"]) != principle["updated"]:
                prompts = set(self._evidence.get(principle["domain"], ()))
                for ref in principle.get("evidence") or []:
                    row = (self.store.feedback.with_exchange(ref["id"]) if ref.get("kind") == "feedback"
                           else self.store.natural.with_exchange(ref["id"]) if ref.get("kind") == "natural" else None)
                    if row is not None and last_user_text(row["messages"]):
                        prompts.add(last_user_text(row["messages"]))
                self._evidence[principle["domain"]] = tuple(sorted(prompts))
                self._seen[principle["id"]] = principle["updated"]
            return self._evidence[principle["domain"]]

    def score(self, domain: str, text: str) -> float:
        models = self.models
        if models is None:
            return lexical_score(domain, text)
        return models.score(domain, text, self._evidence.get(domain, ()))

    def adapter_applies(self, version_id: str, path: Path, messages: list[dict]) -> bool:
        """Does the version's adapter answer this request, or the base weights (its scope.json:
        the requests it learned from)? With REFINERY_ADAPTER_SCOPE off, and for a version without
        a scope, the adapter answers every request. A scoped version's adapter never answers
        unjudged: a request that comes while the encoder loads waits for it (ENCODER_WAIT_S at
        most), and where the encoder cannot load the base weights answer (what the version's
        gate measured outside its scope), said once in the log."""
        if not self.settings.adapter_scope:
            return True
        scope = self._adapter_scopes.get(version_id)
        if scope is None:  # a version's files never change: read once
            try:
                scope = AdapterScope.read(path)
            except (OSError, ValueError):  # checked at registration; a file broken since: everywhere
                log.exception("the scope of %s does not read; its adapter answers every request", version_id)
                scope = AdapterScope.anywhere("unreadable scope.json")
            self._adapter_scopes[version_id] = scope
        if scope.everywhere is not None:
            return True
        compiled = self._compiled_scopes.get(version_id)
        if compiled is None:
            if self.encoder is None and not self.ready.is_set():
                self.ready.wait(ENCODER_WAIT_S)
            if self.encoder is None:
                if not self._warned_no_encoder:
                    self._warned_no_encoder = True
                    log.warning("no sentence encoder (%s): scoped versions answer with the base weights",
                                self.error or "still loading")
                return False
            compiled = self._compiled_scopes[version_id] = scope.compile(
                self.encoder.embed_one, self._domain_models().score if scope.domains else None)
        return compiled.covers(last_user_text(messages))

    def _domain_models(self) -> ScopeModels:
        """The scope models that judge a version's principle domains: the in-context matcher's,
        or (when in-context principles are matched lexically) a set of their own."""
        with self._lock:
            if self.models is None and self._version_models is None:
                self._version_models = ScopeModels(self.encoder, load_corpus(self.encoder))
            return self.models or self._version_models

    def applicable(self, principles: list[dict], messages: list[dict]) -> list[dict]:
        """The principles whose domain covers this request (judged on its last user turn)."""
        for p in principles:
            self._positives(p)
        return self.matcher.applicable(principles, messages)

    def preview(self, domain: str, limit: int = 20, recent: int = 500) -> dict:
        """Which of the latest logged requests a principle of `domain` would be applied to, and the
        closest ones it would not (for an operator deciding on a scope)."""
        requests: list[str] = []
        for messages in self.store.exchanges.recent_requests(recent):
            text = last_user_text(messages)
            if text and text not in requests:
                requests.append(text)
        scored = sorted(((self.score(domain, r) if not is_global(domain) else 1.0, r) for r in requests), reverse=True)
        threshold = self.matcher.threshold
        model = self.models.model(domain) if self.models is not None and not is_global(domain) else None
        return {"domain": domain, "scorer": "encoder" if self.models is not None else "lexical",
                "topics": model.topics if model else [], "requests_scored": len(scored),
                "applies": [{"request": r, "score": round(sc, 3)} for sc, r in scored if sc >= threshold][:limit],
                "closest_outside": [{"request": r, "score": round(sc, 3)} for sc, r in scored if sc < threshold][:limit]}
