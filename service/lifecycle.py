"""Adapter lifecycle in the running server: operator actions, the registry watch, canary rules.

The CLI and the HTTP API both change the on-disk registry; the server notices any change
within `registry_poll_s` and applies it (load the new version, switch, drain, unload).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from adapters.registry import AdapterRejected, Registry
from service.engine import Engine
from service.outcomes import judge_canary, outcomes
from service.serving import AdapterRouter
from service.settings import Settings
from service.store import Store

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self, settings: Settings, store: Store, engine: Engine):
        self.settings = settings
        self.store = store
        self.engine = engine
        self.registry = Registry(settings.data_dir / "adapters", base_model_id=engine.model_id)
        self.router = AdapterRouter(self.registry, engine, default_name=settings.default_adapter)
        self.last_canary_check = 0.0

    # -- operator actions (API; the CLI changes the registry and the watch applies it) ---
    def _result(self, version_or_name: str, changes) -> dict:
        self.router.sync(force=True)
        return {"id": version_or_name, "changes": [asdict(c) for c in changes], "serving": self.router.serving()}

    def _preload(self, version_id: str, actor: str) -> None:
        """Load before switching; a version that does not load is rejected, the old one stays."""
        version = self.registry.show(version_id)
        try:
            self.router.preload(version)
        except Exception as exc:
            self.registry.reject(version_id, f"failed to load: {exc}", actor=actor)
            raise AdapterRejected(f"{version_id} did not load and was rejected: {exc}") from exc

    def promote(self, version_id: str, actor: str, reason: str | None = None) -> dict:
        self._preload(version_id, actor)
        return self._result(version_id, self.registry.promote(version_id, actor=actor, reason=reason))

    def canary(self, version_id: str, share: float, actor: str) -> dict:
        self._preload(version_id, actor)
        return self._result(version_id, self.registry.canary(version_id, share, actor=actor))

    def rollback(self, name: str, actor: str, reason: str | None = None) -> dict:
        return self._result(name, self.registry.rollback(name, actor=actor, reason=reason))

    def retire(self, version_id: str, actor: str, reason: str | None = None) -> dict:
        return self._result(version_id, self.registry.retire(version_id, actor=actor, reason=reason))

    # -- periodic work ---------------------------------------------------------------------
    def tick(self) -> None:
        """Called every `registry_poll_s`: apply registry changes; now and then judge canaries."""
        self.router.sync()
        if time.time() - self.last_canary_check >= self.settings.canary_check_s:
            self.last_canary_check = time.time()
            self.check_canaries()

    def check_canaries(self) -> list[str]:
        """Roll back a canary that is significantly worse; promote one that stayed clean."""
        s = self.settings
        actions = []
        for name in self.registry.names():
            canary, active = self.registry.canary_of(name), self.registry.active(name)
            if canary is None:
                continue
            started = _parse_time(canary.status_changed_at)
            stats = outcomes(self.store, since=started)
            verdict = judge_canary(stats.get(canary.version_id), stats.get(active.version_id if active else "base"),
                                   s.canary_min_samples, s.canary_alpha)
            if verdict.worse:
                self.registry.rollback(name, actor="auto-rollback", reason=verdict.reason, reject=True)
                actions.append(f"rolled back {canary.version_id}: {verdict.reason}")
            elif (s.canary_auto_promote_s > 0 and verdict.p_value is not None
                  and time.time() - started >= s.canary_auto_promote_s):
                self.registry.promote(canary.version_id, actor="auto-promote",
                                      reason=f"clean for {s.canary_auto_promote_s:.0f}s: {verdict.reason}")
                actions.append(f"promoted {canary.version_id}")
        if actions:
            log.warning("; ".join(actions))
            self.router.sync(force=True)
        return actions


def _parse_time(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
