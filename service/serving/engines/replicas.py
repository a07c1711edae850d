"""The engine replicas and the choice of one per request: least requests in flight, with
conversation stickiness, over the replicas that are up.

Stickiness: each conversation has a preferred replica (rendezvous hashing of its key over the
replicas up now, so a replica leaving or joining moves only its own share of conversations),
whose prefix cache already holds the conversation so far. The preferred replica is taken
unless it has `slack` more requests in flight than the least busy one; then the least busy
one is. A replica that fails is marked down at once and gets no traffic until its health
check passes and the versions being served are loaded on it (service.serving.engines.vllm).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field


@dataclass
class Replica:
    url: str
    up: bool = False
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    error: str | None = None
    loaded: set[str] = field(default_factory=set)  # adapter versions loaded on it
    reserved: bool = False  # held alone for scoring work (see ReplicaSet.reserve)

    def as_dict(self) -> dict:
        return {"url": self.url, "up": self.up, "in_flight": self.in_flight, "requests": self.requests,
                "failures": self.failures, "error": self.error, "adapters": sorted(self.loaded)}


def _weight(key: str, url: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{key}|{url}".encode(), digest_size=8).digest(), "big")


def preferred(sticky_key: str, urls: list[str]) -> str:
    """The replica (of `urls`) that a conversation's key prefers: highest rendezvous weight."""
    return max(urls, key=lambda u: _weight(sticky_key, u))


class ReplicaSet:
    def __init__(self, urls: list[str], slack: int = 2):
        if not urls:
            raise ValueError("no engine replicas configured (REFINERY_ENGINE_URLS)")
        self.replicas = [Replica(u) for u in urls]
        self.slack = slack
        self._lock = threading.Lock()

    def up(self) -> list[Replica]:
        return [r for r in self.replicas if r.up]

    def pick(self, sticky_key: str | None, exclude: set[str] = frozenset()) -> Replica | None:
        """Choose a replica for one request and count it in flight (give it back with `done`)."""
        with self._lock:
            live = [r for r in self.replicas if r.up and not r.reserved and r.url not in exclude]
            if not live:
                return None
            least = min(live, key=lambda r: r.in_flight)
            choice = least
            if sticky_key:
                first = next(r for r in live if r.url == preferred(sticky_key, [r.url for r in live]))
                if first.in_flight <= least.in_flight + self.slack:
                    choice = first
            choice.in_flight += 1
            choice.requests += 1
            return choice

    def waiting_for_reserved(self, exclude: set[str] = frozenset()) -> bool:
        """True when the only replicas left to try are reserved for a moment (wait, then pick)."""
        return any(r.up and r.reserved and r.url not in exclude for r in self.replicas)

    def reserve(self) -> Replica | None:
        """An up replica with nothing in flight, taken out of `pick` until `unreserve`: work
        that must run alone in a decoding step (prompt log-probs, see engines.vllm)."""
        with self._lock:
            idle = [r for r in self.replicas if r.up and not r.reserved and r.in_flight == 0]
            if not idle:
                return None
            idle[0].reserved = True
            return idle[0]

    def unreserve(self, replica: Replica) -> None:
        with self._lock:
            replica.reserved = False

    def done(self, replica: Replica) -> None:
        with self._lock:
            replica.in_flight -= 1

    def mark_down(self, replica: Replica, error: str) -> None:
        with self._lock:
            if replica.up:
                replica.failures += 1
            replica.up, replica.error = False, error

    def mark_up(self, replica: Replica) -> None:
        with self._lock:
            replica.up, replica.error = True, None
