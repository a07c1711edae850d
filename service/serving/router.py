"""Which weights answer a request: the base model, an adapter name's active (or canary)
version, or a pinned `NAME@vN`; and keeping the engine's loaded adapters in line with the
registry. The router only reads the registry: a version that fails to load is recorded in
`load_errors` and the version serving before stays; service.rollout decides what happens to it.

Hot-swap, in order: the new version is loaded under its own name while the old one keeps
serving; the routing table is replaced in one assignment under a lock; requests already
routed hold a lease on the old version and finish on it; the old version is unloaded when
its last lease is returned. A request is routed and its lease taken under the same lock, so
no request can be routed to a version that is about to be unloaded, and no answer is ever
produced by two versions.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass

from adapters.registry import AdapterRejected, AdapterVersion, Registry, Resolution
from service.serving.engines.base import Engine, EngineFull

log = logging.getLogger(__name__)


class UnknownModel(LookupError):
    pass


@dataclass(frozen=True)
class Route:
    model: str  # what the response's `model` field says: the exact version, or the base id
    adapter: str | None  # the engine adapter name (= version id), None for the base model


class AdapterRouter:
    def __init__(self, registry: Registry, engine: Engine, default_name: str = "refinery",
                 aliases: tuple[str, ...] = ("default",), max_pinned_loaded: int = 4):
        self.registry = registry
        self.engine = engine
        self.default_name = default_name
        self.aliases = aliases
        self.max_pinned_loaded = max_pinned_loaded
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._table: dict[str, Resolution] = {}  # name -> its serving active/canary versions
        self._pinned: collections.OrderedDict[str, None] = collections.OrderedDict()  # LRU
        self._token: str | None = None
        self.load_errors: dict[str, str] = {}
        self.unloadable: set[str] = set()  # failed with AdapterRejected: the adapter, not the moment
        self.swaps = 0

    # -- routing (request path) ----------------------------------------------------------
    def route(self, model: str | None, sticky_key: str | None) -> Route:
        """Choose the version for a request and take a lease on it (release with `release`)."""
        base = self.engine.model_id
        if model == base:
            return Route(base, None)
        name = self.default_name if model in (None, "", *self.aliases, self.default_name) else model
        with self._lock:
            res = self._table.get(name)
            if res is not None:
                version = res.choose(sticky_key)
                if version is not None:
                    self.engine.acquire(version.version_id)
                    return Route(version.version_id, version.version_id)
            if name == self.default_name:
                return Route(base, None)  # nothing distilled yet: the base model answers
            if name in self.engine.adapters:  # a pinned version already loaded
                try:
                    self.engine.acquire(name)
                    if name in self._pinned:
                        self._pinned.move_to_end(name)
                    return Route(name, name)
                except KeyError:  # unloaded a moment ago: load it again below
                    pass
        res = self.registry.resolve(name)
        if res is None or not res.pinned or res.version is None:
            raise UnknownModel(name)
        self._load(res.version)  # a pinned version that is not loaded yet: load it now
        with self._lock:
            self._pinned[name] = None
            self.engine.acquire(name)
        self._evict_pinned()
        return Route(name, name)

    def release(self, route: Route) -> None:
        self.engine.release(route.adapter)

    def model_ids(self) -> list[str]:
        """For /v1/models: the base, every served name (alias of its active version) and every
        usable version."""
        names = sorted(n for n, r in self._table.items() if r.version or r.canary)
        versions = [v.version_id for v in self.registry.list() if v.status != "rejected"]
        aliases = [self.default_name] if self.default_name in names else []
        return [self.engine.model_id, *aliases, *[n for n in names if n not in aliases], *versions]

    def serving(self) -> dict[str, dict]:
        with self._lock:
            return {n: {"active": r.version.version_id if r.version else None,
                        "canary": r.canary.version_id if r.canary else None,
                        "canary_share": r.canary_share} for n, r in self._table.items()}

    # -- keeping up with the registry ----------------------------------------------------
    def preload(self, version: AdapterVersion) -> None:
        """Load a version (raises on failure) without routing anything to it."""
        self._load(version)

    def sync(self, force: bool = False) -> bool:
        """Apply the registry's active/canary versions. Returns True when the table changed."""
        with self._sync_lock:
            token = self.registry.state_token()
            if token == self._token and not force:
                return False
            wanted: dict[str, dict[str, AdapterVersion]] = collections.defaultdict(dict)
            for v in self.registry.list():
                if v.status in ("active", "canary"):
                    wanted[v.name][v.status] = v
            table: dict[str, Resolution] = {}
            for name, versions in wanted.items():
                old = self._table.get(name)
                active = self._loaded_or(versions.get("active"), old.version if old else None)
                canary = self._loaded_or(versions.get("canary"), None)
                table[name] = Resolution(name, name, False, active, canary,
                                         canary.canary_share if canary else 0.0)
            with self._lock:
                before = {v.version_id for r in self._table.values() for v in (r.version, r.canary) if v}
                self._table = table
                after = {v.version_id for r in table.values() for v in (r.version, r.canary) if v}
            for gone in before - after:
                # Requests already routed to it hold leases; the engine unloads it after them.
                self.engine.unload_adapter(gone)
            self._token = token
            changed = before != after
            if changed:
                self.swaps += 1
                log.info("serving table now %s", self.serving())
            return changed

    def _loaded_or(self, version: AdapterVersion | None, fallback: AdapterVersion | None) -> AdapterVersion | None:
        if version is None:
            return None
        try:
            self._load(version)
            return version
        except Exception as exc:
            # The version that was serving stays; the operator sees why in /admin/adapters, and
            # the rollout rejects a version that cannot load (service.rollout.lifecycle).
            self.load_errors[version.version_id] = str(exc)
            if isinstance(exc, AdapterRejected):
                self.unloadable.add(version.version_id)
            log.error("adapter %s did not load, keeping %s: %s", version.version_id,
                      fallback.version_id if fallback else "the base model", exc)
            return fallback

    def _load(self, version: AdapterVersion) -> None:
        if self.engine.keep_loaded(version.version_id):  # also calls off an unload still pending
            return
        self.registry.verify(version.version_id)  # weights unchanged since registration
        try:
            self.engine.load_adapter(version.version_id, str(version.path)).result(timeout=300)
        except (AdapterRejected, EngineFull):  # EngineFull is not the adapter's fault: not rejected
            raise
        except Exception as exc:
            raise AdapterRejected(f"{version.version_id} failed to load: {exc}") from exc
        self.load_errors.pop(version.version_id, None)
        self.unloadable.discard(version.version_id)

    def _evict_pinned(self) -> None:
        with self._lock:
            serving = {v.version_id for r in self._table.values() for v in (r.version, r.canary) if v}
            while len(self._pinned) > self.max_pinned_loaded:
                name, _ = self._pinned.popitem(last=False)
                if name not in serving:
                    self.engine.unload_adapter(name)
