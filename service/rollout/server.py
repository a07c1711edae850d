"""The rollout inside the running server: the lifecycle with the engine as preloader, the registry
watch that keeps the router in line, versions the registry names but the engine cannot load, and
the canary checks (service.rollout.canary) that roll back or promote on their own: each canary is
judged on its outcomes and answer lengths since it started, against the active version's (or the
base model's) over the same time, and the API shows the same verdicts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from datetime import datetime

from adapters.registry import AdapterVersion, Change, Registry
from service.rollout.canary import CanaryVerdict, judge_canary
from service.rollout.lifecycle import Lifecycle
from service.serving.engines.base import Engine
from service.serving.router import AdapterRouter
from service.settings import Settings
from service.store import Store

log = logging.getLogger(__name__)


class ServerRollout:
    """The lifecycle in the running server, with the router it keeps in line with the registry."""

    def __init__(self, settings: Settings, store: Store, engine: Engine):
        self.settings, self.store, self.engine = settings, store, engine
        self.registry = Registry(settings.data_dir / "adapters", base_model_id=engine.model_id)
        config = engine.base_config()
        if config is not None:
            self.registry.record_base_config(config)
        self.registry.record_engine_limits(engine.limits())
        self.router = AdapterRouter(self.registry, engine, default_name=settings.default_adapter)
        self.lifecycle = Lifecycle(self.registry, self.router.preload, lambda: self.router.sync(force=True))
        self.last_canary_check = 0.0

    def result(self, target: str, changes: list[Change]) -> dict:
        """What the API answers after a change: the changes and what serves now."""
        return {"id": target, "changes": [asdict(c) for c in changes], "serving": self.router.serving()}

    # -- periodic work ---------------------------------------------------------------------
    def tick(self) -> None:
        """Called every `registry_poll_s`: apply registry changes made elsewhere, reject what the
        registry names but cannot load, and now and then judge canaries."""
        self.router.sync()
        self.reject_unloadable()
        if time.time() - self.last_canary_check >= self.settings.canary_check_s:
            self.last_canary_check = time.time()
            self.check_canaries()

    def reject_unloadable(self) -> list[str]:
        """An active or canary version the router could not load (promoted from a process that
        could not try it on the served model) is rejected, which brings the previously active
        version back."""
        rejected = []
        for version_id in sorted(self.router.unloadable):
            self.router.unloadable.discard(version_id)
            version = self.registry.get(version_id)
            if version is not None and version.status in ("active", "canary"):
                error = self.router.load_errors.get(version_id, "it did not load")
                self.lifecycle.reject(version_id, f"failed to load: {error}", actor="server")
                rejected.append(version_id)
        return rejected

    def judge(self, name: str) -> tuple[AdapterVersion, CanaryVerdict] | None:
        """The canary of `name` and its verdict now (None when it has no canary)."""
        canary, active = self.registry.canary_of(name), self.registry.active(name)
        if canary is None:
            return None
        s, outcomes = self.settings, self.store.outcomes
        started = _parse_time(canary.status_changed_at)
        active_id = active.version_id if active else "base"
        stats = outcomes.per_version(since=started)
        verdict = judge_canary(stats.get(canary.version_id), stats.get(active_id), s.canary_min_samples,
                               s.canary_alpha, canary_lengths=outcomes.answer_lengths(canary.version_id, since=started),
                               active_lengths=outcomes.answer_lengths(active_id, since=started))
        return canary, verdict

    def canary_verdicts(self) -> dict[str, dict]:
        """{canary version id: its verdict as a dict}, for the API."""
        out = {}
        for name in self.registry.names():
            judged = self.judge(name)
            if judged is not None:
                out[judged[0].version_id] = asdict(judged[1])
        return out

    def check_canaries(self) -> list[str]:
        """Roll back a canary that is significantly worse on any outcome; promote one that stayed clean."""
        s = self.settings
        actions = []
        for name in self.registry.names():
            judged = self.judge(name)
            if judged is None:
                continue
            canary, verdict = judged
            started = _parse_time(canary.status_changed_at)
            if verdict.worse:
                self.lifecycle.rollback(name, actor="auto-rollback", reason=verdict.reason, reject=True)
                actions.append(f"rolled back {canary.version_id}: {verdict.reason}")
            elif (s.canary_auto_promote_s > 0 and verdict.p_value is not None
                  and time.time() - started >= s.canary_auto_promote_s):
                self.lifecycle.promote(canary.version_id, actor="auto-promote",
                                       reason=f"clean for {s.canary_auto_promote_s:.0f}s: {verdict.reason}")
                actions.append(f"promoted {canary.version_id}")
        if actions:
            log.warning("; ".join(actions))
        return actions


def _parse_time(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
