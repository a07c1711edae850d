"""The on-disk adapter registry: versioned LoRA adapters, their status, and an audit log.

Layout under `root`:

    NAME@vN/                    one directory per version; written once, never modified
        adapter_model.safetensors
        adapter_config.json
        metadata.json           immutable facts (hashes, principles, base model, report, ...)
        report.json             only when the evaluation report was given as a file
    state.json                  mutable status of every version, replaced atomically
    base_model_config.json      the served base model's config (written by the server), so a
                                process without the model (the CLI, the job) can check shapes
    engine_limits.json          what the serving engine can load (e.g. vLLM's max_lora_rank),
                                written by the server; registration refuses what exceeds it
    audit.jsonl                 one line per status change (and per refused registration)
    .lock                       flock: serialises writers across threads and processes
    .tmp-PID-*                  writes in progress; removed on open once PID is gone

Why status lives in one state.json and not in each metadata.json: a promotion changes two
versions at once (new one active, old one retired). One `os.replace` of one file makes that
atomic; two file writes could leave two active versions after a crash.

Status rules (per NAME; at most one `active` and at most one `canary`):

    register          -> candidate
    promote(v)        candidate|canary|retired -> active; the old active -> retired.
                      A canary of another version keeps running. rejected: refused.
    canary(v, share)  candidate|retired|canary -> canary with that share (0 < share < 1);
                      a canary of another version -> candidate. active/rejected: refused.
    rollback(NAME)    if a canary runs: it ends (-> retired, or rejected with reject=True),
                      the active version is untouched. Otherwise the active version ->
                      retired (or rejected) and the previously active version -> active again.
                      Repeated rollbacks walk further back; nothing to go back to: refused.
    retire(v)         any but rejected -> retired (retiring the active one leaves NAME with
                      no active version).
    reject(v, reason) any -> rejected, final. Rejecting the active version brings the
                      previously active one back (the server calls this when a promoted
                      version does not load).

Resolving a chat request's `model`: `NAME@vN` -> that version in any status except rejected
(pinning a retired version reproduces old answers); `NAME` -> its active version plus its
canary and share (the server routes that share to the canary; with a canary but no active
version the rest goes to the base model); anything else -> None.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Callable, Iterator

from adapters.files import TMP_PREFIX, fsync_path, write_json_atomic
from adapters.registry.validate import stage_copy
from adapters.registry.versions import (AUDIT, BASE_CONFIG, ENGINE_LIMITS, METADATA, NAME_RE, STATE, WEIGHTS,
                                        AdapterRejected, AdapterVersion, Change, InvalidTransition, NotFound,
                                        RegistryError, Resolution, check_share, parse_version_id)
from adapters.runtime import pid_alive

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")



# ---------------------------------------------------------------------------------------------


def _empty_state() -> dict:
    # versions: {version_id: {status, share, changed_at, reason}}
    # history: {name: [version ids in the order they last became active]}, for rollback
    return {"schema": 1, "seq": 0, "base_model": None, "versions": {}, "history": {}}


class Registry:
    """Versioned adapters under `root`. Safe to share between threads and between processes
    (the CLI and a running server act on the same root); every read sees the latest state."""

    def __init__(self, root: Path | str, base_model_id: str | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.RLock()
        self._meta_cache: dict[str, dict] = {}  # metadata.json never changes once written
        self._given_base_model = base_model_id
        with self._locked():
            self._clean_temp()
            state = self._read_state()
            entries = self._adopt_orphans(state)
            # The server knows what it serves; it records that here so the CLI can check
            # registrations against the same base model without being told.
            if base_model_id and state.get("base_model") != base_model_id:
                state["base_model"] = base_model_id
                entries.append({"action": "base-model", "after": base_model_id, "actor": "registry"})
            if entries:
                self._commit(state, entries)

    # ----- reading

    @property
    def base_model_id(self) -> str | None:
        return self._given_base_model or self._read_state().get("base_model")

    def state_token(self) -> str:
        """Changes whenever anything in the registry changes (register, any status change).

        A server polls this (one small file read) every ~0.5 s and reloads when it differs.
        `seq` increases on every commit; the inode tells a re-created registry apart.
        """
        try:
            ino = (self.root / STATE).stat().st_ino
        except FileNotFoundError:
            return "0"
        return f"{self._read_state()['seq']}-{ino}"

    def list(self, name: str | None = None) -> list[AdapterVersion]:
        versions = self._view(self._read_state()).values()
        return sorted((v for v in versions if name is None or v.name == name), key=lambda v: (v.name, v.version))

    def names(self) -> list[str]:
        return sorted({v.name for v in self.list()})

    def get(self, version_id: str) -> AdapterVersion | None:
        return self._view(self._read_state()).get(version_id)

    def path_of(self, version_id: str) -> Path:
        """Where a version's files are (without reading the state: for the request path)."""
        return self.root / version_id

    def show(self, version_id: str) -> AdapterVersion:
        v = self.get(version_id)
        if v is None:
            raise NotFound(f"no adapter version {version_id!r}" + ("" if parse_version_id(version_id) else " (expected NAME@vN)"))
        return v

    def active(self, name: str) -> AdapterVersion | None:
        return next((v for v in self.list(name) if v.status == "active"), None)

    def canary_of(self, name: str) -> AdapterVersion | None:
        return next((v for v in self.list(name) if v.status == "canary"), None)

    def resolve(self, model: str) -> Resolution | None:
        """Map a request's `model` to the version(s) serving it; None when unknown."""
        view = self._view(self._read_state())
        parsed = parse_version_id(model or "")
        if parsed:
            v = view.get(model)
            if v is None or v.status == "rejected":
                return None
            return Resolution(model, parsed[0], True, v, None, 0.0)
        named = [v for v in view.values() if v.name == model]
        active = next((v for v in named if v.status == "active"), None)
        canary = next((v for v in named if v.status == "canary"), None)
        if active is None and canary is None:
            return None
        return Resolution(model, model, False, active, canary, canary.canary_share if canary else 0.0)

    def record_base_config(self, config: dict) -> None:
        """Keep the served base model's config (its `to_dict()`), for shape checks elsewhere."""
        with self._locked():
            if self.base_config() != config:
                write_json_atomic(self.root / BASE_CONFIG, config)

    def base_config(self) -> dict | None:
        """The config the server recorded with `record_base_config`, or None."""
        try:
            return json.loads((self.root / BASE_CONFIG).read_text())
        except (OSError, ValueError):
            return None

    def record_engine_limits(self, limits: dict) -> None:
        """Keep what the serving engine can load ({"max_lora_rank": 16}): `register` refuses
        what is beyond it, in whichever process it runs."""
        with self._locked():
            if self.engine_limits() != limits:
                write_json_atomic(self.root / ENGINE_LIMITS, limits)

    def engine_limits(self) -> dict:
        return json.loads((self.root / ENGINE_LIMITS).read_text()) if (self.root / ENGINE_LIMITS).is_file() else {}

    def audit(self, limit: int | None = None) -> list[dict]:
        try:
            lines = (self.root / AUDIT).read_text().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            with contextlib.suppress(ValueError):  # a line cut short by a crash is skipped
                entries.append(json.loads(line))
        return entries[-limit:] if limit else entries

    def verify(self, version_id: str) -> None:
        """Re-hash the stored weights; raises AdapterRejected if they changed on disk."""
        v = self.show(version_id)
        sha = hashlib.sha256((v.path / WEIGHTS).read_bytes()).hexdigest()
        if sha != v.weights_sha256:
            raise AdapterRejected(f"{version_id}: {WEIGHTS} changed on disk since registration (sha256 {sha[:12]}, expected {v.weights_sha256[:12]})")

    # ----- registering

    def register(
        self,
        src_dir: Path | str,
        name: str,
        principles: tuple[str, ...] | list[str] = (),
        dataset_hash: str | None = None,
        report: dict | Path | str | None = None,
        notes: str | None = None,
        actor: str = "registry",
    ) -> str:
        """Validate and copy an adapter directory in as a new candidate; returns `NAME@vN`."""
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise RegistryError(f"invalid adapter name {name!r}: use letters, digits, '.', '_' or '-' (at most 64), starting with a letter or digit")
        src = Path(src_dir)
        try:
            tmp, facts = stage_copy(src, self.root, report, self.base_model_id, self.engine_limits())
        except AdapterRejected as e:
            with self._locked():
                self._append_audit([{"action": "refuse", "name": name, "source": str(src), "reason": str(e), "actor": actor}])
            raise
        try:
            with self._locked():
                state = self._read_state()
                entries = self._adopt_orphans(state)
                n = self._next_number(name, state)
                while True:
                    version_id = f"{name}@v{n}"
                    meta = {
                        "schema": 1, "version_id": version_id, "name": name, "version": n,
                        "principles": [str(p) for p in principles], "dataset_hash": dataset_hash,
                        "created_at": _now(), "created_by": actor, "source": str(src.resolve()),
                        "notes": notes, **facts,
                    }
                    (tmp / METADATA).write_text(json.dumps(meta, indent=2, sort_keys=True))
                    fsync_path(tmp / METADATA)
                    fsync_path(tmp)
                    try:
                        # The commit point: after this rename the version exists even if we
                        # crash before state.json records it (it is adopted on the next open).
                        os.rename(tmp, self.root / version_id)
                        break
                    except OSError as e:
                        # Only a registry written by something that ignores the lock gets here.
                        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                            raise
                        n += 1
                fsync_path(self.root)
                state["versions"][version_id] = {"status": "candidate", "share": None, "changed_at": _now(), "reason": None}
                entries.append({"action": "register", "version": version_id, "before": None, "after": "candidate", "actor": actor, "source": str(src)})
                self._commit(state, entries)
                return version_id
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _next_number(self, name: str, state: dict) -> int:
        # Directories count too: a version whose state entry was lost still owns its number.
        parsed = (parse_version_id(v) for v in (*state["versions"], *os.listdir(self.root)))
        return 1 + max((p[1] for p in parsed if p and p[0] == name), default=0)

    # ----- status operations (each returns the changes made; [] when nothing changed)

    def promote(self, version_id: str, *, actor: str = "registry", reason: str | None = None) -> list[Change]:
        def apply(state: dict, ops: _Ops) -> None:
            name, status = ops.status_of(version_id)
            if status == "rejected":
                raise InvalidTransition(f"{version_id} was rejected ({ops.reason_of(version_id)}); register the adapter again to use it")
            if status == "active":
                return
            current = ops.find(name, "active")
            if current:
                ops.set(current, "retired")
            ops.set(version_id, "active")
            history = [v for v in state["history"].get(name, []) if v != version_id]
            state["history"][name] = [*history, version_id]

        return self._mutate("promote", actor, reason, apply)

    def canary(self, version_id: str, share: float, *, actor: str = "registry", reason: str | None = None) -> list[Change]:
        share = check_share(share)

        def apply(state: dict, ops: _Ops) -> None:
            name, status = ops.status_of(version_id)
            if status in ("active", "rejected"):
                raise InvalidTransition(f"{version_id} is {status}; only a candidate or retired version can be a canary")
            old = ops.find(name, "canary")
            if old and old != version_id:
                ops.set(old, "candidate")
            ops.set(version_id, "canary", share=share)

        return self._mutate("canary", actor, reason, apply)

    def rollback(self, name: str, *, actor: str = "registry", reason: str | None = None, reject: bool = False) -> list[Change]:
        """End NAME's canary if one runs; otherwise bring back the previously active version.
        The version rolled back becomes retired, or rejected when `reject` (a verdict: it
        cannot be promoted again)."""
        end = "rejected" if reject else "retired"

        def apply(state: dict, ops: _Ops) -> None:
            canary = ops.find(name, "canary")
            if canary:
                ops.set(canary, end)
                return
            active = ops.find(name, "active")
            if active is None:
                raise InvalidTransition(f"{name} has no active version or canary to roll back")
            previous = ops.previous_active(name, active)
            if previous is None:
                raise InvalidTransition(f"{active} is the only version of {name} that was ever active; nothing to roll back to (use retire to stop serving it)")
            ops.set(active, end)
            ops.set(previous, "active")

        return self._mutate("rollback", actor, reason, apply)

    def retire(self, version_id: str, *, actor: str = "registry", reason: str | None = None) -> list[Change]:
        def apply(state: dict, ops: _Ops) -> None:
            _, status = ops.status_of(version_id)
            if status == "rejected":
                raise InvalidTransition(f"{version_id} is rejected; rejection is final")
            ops.set(version_id, "retired")

        return self._mutate("retire", actor, reason, apply)

    def reject(self, version_id: str, reason: str, *, actor: str = "registry") -> list[Change]:
        def apply(state: dict, ops: _Ops) -> None:
            name, status = ops.status_of(version_id)
            if status == "active":
                previous = ops.previous_active(name, version_id)
                if previous:
                    ops.set(previous, "active")
            ops.set(version_id, "rejected")

        return self._mutate("reject", actor, reason, apply)

    # ----- internals

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock is held per open file description, so it also excludes other Registry objects
        # in this process; the thread lock keeps one object's threads from sharing one.
        with self._thread_lock, open(self.root / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _mutate(self, action: str, actor: str, reason: str | None, apply: Callable[[dict, "_Ops"], None]) -> list[Change]:
        with self._locked():
            state = self._read_state()
            entries = self._adopt_orphans(state)
            ops = _Ops(state, self._view(state), reason)
            apply(state, ops)
            op = uuid.uuid4().hex[:12]
            for c in ops.changes:
                entries.append({"action": action, "op": op, "version": c.version_id, "before": c.before, "after": c.after,
                                "share_before": c.share_before, "share_after": c.share_after, "reason": reason, "actor": actor})
            if entries:
                self._commit(state, entries)
            return ops.changes

    def _commit(self, state: dict, entries: list[dict]) -> None:
        """state.json first (the truth), then the audit lines. A crash in between loses audit
        lines, never a status change; an audit line never claims a change that did not happen."""
        state["seq"] += 1
        write_json_atomic(self.root / STATE, state)
        self._append_audit(entries)

    def _append_audit(self, entries: list[dict]) -> None:
        now = _now()
        with open(self.root / AUDIT, "a") as f:
            for e in entries:
                f.write(json.dumps({"time": now, **e}, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _read_state(self) -> dict:
        try:
            text = (self.root / STATE).read_text()
        except FileNotFoundError:
            return _empty_state()
        try:
            state = json.loads(text)
        except ValueError as e:
            # Cannot come from our own writes (they are atomic); guessing statuses would be worse.
            raise RegistryError(f"{self.root / STATE} is corrupt ({e}); restore it from a backup or the audit log") from e
        return {**_empty_state(), **state}

    def _meta(self, version_id: str) -> dict | None:
        meta = self._meta_cache.get(version_id)
        if meta is None:
            try:
                meta = json.loads((self.root / version_id / METADATA).read_text())
            except (OSError, ValueError):
                return None
            self._meta_cache[version_id] = meta
        return meta

    def _view(self, state: dict) -> dict[str, AdapterVersion]:
        view = {}
        for version_id, entry in state["versions"].items():
            meta = self._meta(version_id)
            if meta is None:  # directory removed by hand: not servable, so not listed
                continue
            view[version_id] = AdapterVersion(
                version_id=version_id, name=meta["name"], version=meta["version"], path=self.root / version_id,
                status=entry["status"], canary_share=entry.get("share"), principles=tuple(meta.get("principles", ())),
                dataset_hash=meta.get("dataset_hash"), base_model=meta.get("base_model"),
                weights_sha256=meta["weights_sha256"], weights_bytes=meta.get("weights_bytes", 0), lora=meta.get("lora", {}),
                report=meta.get("report"), created_at=meta["created_at"], created_by=meta.get("created_by", ""),
                source=meta.get("source"), notes=meta.get("notes"), status_changed_at=entry.get("changed_at", meta["created_at"]),
                status_reason=entry.get("reason"),
            )
        return view

    def _adopt_orphans(self, state: dict) -> list[dict]:
        """Versions renamed into place by a registration that died before recording them."""
        entries = []
        for entry in sorted(os.listdir(self.root)):
            if entry in state["versions"] or not parse_version_id(entry):
                continue
            meta = self._meta(entry)
            if meta is None or meta.get("version_id") != entry:
                log.warning("ignoring %s: no readable metadata.json", self.root / entry)
                continue
            state["versions"][entry] = {"status": "candidate", "share": None, "changed_at": _now(), "reason": "recovered after an interrupted registration"}
            entries.append({"action": "recover", "version": entry, "before": None, "after": "candidate", "actor": "registry"})
        return entries

    def _clean_temp(self) -> None:
        """Remove what crashed writers left. A temp entry whose process still runs may be a
        registration in progress, so it stays."""
        for entry in os.listdir(self.root):
            if not entry.startswith(TMP_PREFIX):
                continue
            pid = entry[len(TMP_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and pid_alive(int(pid)):
                continue
            path = self.root / entry
            log.info("removing %s left by an interrupted write", path)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


class _Ops:
    """Status edits on one in-memory state, recording each Change (used inside the lock)."""

    def __init__(self, state: dict, view: dict[str, AdapterVersion], reason: str | None):
        self.state, self.view, self.reason = state, view, reason
        self.changes: list[Change] = []

    def status_of(self, version_id: str) -> tuple[str, str]:
        v = self.view.get(version_id)
        if v is None:
            raise NotFound(f"no adapter version {version_id!r}" + ("" if parse_version_id(version_id) else " (expected NAME@vN)"))
        return v.name, self.state["versions"][version_id]["status"]

    def reason_of(self, version_id: str) -> str | None:
        return self.state["versions"][version_id].get("reason")

    def find(self, name: str, status: str) -> str | None:
        return next((vid for vid, v in self.view.items() if v.name == name and self.state["versions"][vid]["status"] == status), None)

    def previous_active(self, name: str, current: str) -> str | None:
        """Most recent earlier active version still usable; drops `current` from the history so
        that a second rollback goes further back instead of returning to `current`."""
        history = [v for v in self.state["history"].get(name, []) if v != current]
        self.state["history"][name] = history
        for vid in reversed(history):
            if vid in self.view and self.state["versions"][vid]["status"] in ("retired", "candidate"):
                return vid
        return None

    def set(self, version_id: str, status: str, share: float | None = None) -> None:
        entry = self.state["versions"][version_id]
        before, share_before = entry["status"], entry.get("share")
        if before == status and share_before == share:
            return
        entry.update(status=status, share=share, changed_at=_now(), reason=self.reason)
        self.changes.append(Change(version_id, before, status, share_before, share))
