"""What serves: the one path by which a version is promoted, canaried, rolled back, retired or
rejected, wherever the change comes from (the API, the CLI, the refinement job, the canary rule).

Every promotion and canary preloads first: in the server the version is loaded onto the engine
beside what serves now, before anything switches; in a process without the model (the CLI, the
job's worker) its weights are re-hashed and its shapes checked against the served base model's
config, which the server keeps in the registry. A version that fails is rejected, and what
served before keeps serving. The registry (adapters.registry) holds the state; the server's
router follows it within `registry_poll_s`.

Inside the server this lifecycle preloads with the engine (service.rollout.server).
"""

from __future__ import annotations

from typing import Callable

from adapters.registry import AdapterRejected, AdapterVersion, Change, Registry, check_loadable, check_share

Preload = Callable[[AdapterVersion], None]  # raises when the version cannot serve


def offline_check(registry: Registry) -> Preload:
    """Preloading for a process that does not serve: weights unchanged since registration, and
    (once a server has recorded its base model's config) shapes that fit it."""

    def check(version: AdapterVersion) -> None:
        registry.verify(version.version_id)
        config = registry.base_config()
        if config is not None:
            check_loadable(version.path, config)

    return check


class Lifecycle:
    def __init__(self, registry: Registry, preload: Preload, after_change: Callable[[], None] | None = None):
        self.registry = registry
        self.preload = preload
        self.after_change = after_change or (lambda: None)

    @classmethod
    def offline(cls, registry: Registry) -> "Lifecycle":
        return cls(registry, offline_check(registry))

    def _ready(self, version_id: str, actor: str) -> None:
        """Preload before switching; a version that cannot serve is rejected, the old one stays."""
        version = self.registry.show(version_id)
        try:
            self.preload(version)
        except AdapterRejected as exc:
            self.registry.reject(version_id, f"failed to load: {exc}", actor=actor)
            self.after_change()
            raise AdapterRejected(f"{version_id} did not load and was rejected: {exc}") from exc

    def _done(self, changes: list[Change]) -> list[Change]:
        self.after_change()
        return changes

    def promote(self, version_id: str, actor: str, reason: str | None = None) -> list[Change]:
        self._ready(version_id, actor)
        return self._done(self.registry.promote(version_id, actor=actor, reason=reason))

    def canary(self, version_id: str, share: float, actor: str, reason: str | None = None) -> list[Change]:
        check_share(share)
        self._ready(version_id, actor)
        return self._done(self.registry.canary(version_id, share, actor=actor, reason=reason))

    def rollback(self, name: str, actor: str, reason: str | None = None, reject: bool = False) -> list[Change]:
        return self._done(self.registry.rollback(name, actor=actor, reason=reason, reject=reject))

    def retire(self, version_id: str, actor: str, reason: str | None = None) -> list[Change]:
        return self._done(self.registry.retire(version_id, actor=actor, reason=reason))

    def reject(self, version_id: str, reason: str, actor: str) -> list[Change]:
        return self._done(self.registry.reject(version_id, reason, actor=actor))
