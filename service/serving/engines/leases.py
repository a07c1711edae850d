"""Leases on adapter versions held by an engine: which versions are loaded, who is using
them, and which are waiting for their last request to finish before they are unloaded.

Both engines keep their leases here: the embedded engine's LoRA slots (service.serving.slots)
put the layers of each version it lists, and a remote engine has only the names. Thread safe:
leases are taken on the event loop and in worker threads alike.
"""

from __future__ import annotations

import collections
import threading


class Leases:
    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}  # version -> its directory as this process sees it
        self._held: collections.Counter[str] = collections.Counter()
        self._unload: set[str] = set()
        self._lock = threading.Lock()

    def add(self, name: str, path: str) -> None:
        with self._lock:
            self.loaded[name] = path
            self._unload.discard(name)

    def acquire(self, name: str | None) -> None:
        if name is None:
            return
        with self._lock:
            if name not in self.loaded:
                raise KeyError(f"adapter {name!r} is not loaded")
            self._held[name] += 1

    def release(self, name: str | None) -> bool:
        """Return a lease; True when that was the last one of a version waiting to unload."""
        if name is None:
            return False
        with self._lock:
            self._held[name] -= 1
            return self._held[name] <= 0 and name in self._unload

    def keep_loaded(self, name: str) -> bool:
        with self._lock:
            if name in self.loaded:
                self._unload.discard(name)
                return True
            return False

    def request_unload(self, name: str) -> None:
        with self._lock:
            if name in self.loaded:
                self._unload.add(name)

    def take_idle(self) -> list[str]:
        """Versions asked to unload whose last lease is back; they leave the table now."""
        with self._lock:
            ready = [n for n in self._unload if self._held[n] <= 0]
            for n in ready:
                self._unload.discard(n)
                self.loaded.pop(n, None)
                self._held.pop(n, None)
            return ready

    def draining(self) -> bool:
        """True while some version waits for its last lease before it is unloaded."""
        with self._lock:
            return bool(self._unload)
