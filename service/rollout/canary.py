"""The canary rule: is a canary version significantly worse than the active one?

The counts come from the store (service.store.outcomes): a request is negative when the user
gave it a thumbs-down or the next user turn was natural negative feedback. The canary is rolled
back when its negative rate is significantly higher than the active version's (one-sided
two-proportion z-test, with a minimum sample on each side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

@dataclass
class CanaryVerdict:
    worse: bool
    p_value: float | None
    canary_rate: float | None
    active_rate: float | None
    reason: str


def two_proportion_p(bad_a: int, n_a: int, bad_b: int, n_b: int) -> float:
    """One-sided p-value that proportion a (canary) is larger than b (active)."""
    p_pool = (bad_a + bad_b) / (n_a + n_b)
    se = math.sqrt(p_pool * (1 - p_pool) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0
    z = (bad_a / n_a - bad_b / n_b) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


def judge_canary(canary: dict | None, active: dict | None, min_samples: int, alpha: float) -> CanaryVerdict:
    n_c = (canary or {}).get("requests") or 0
    n_a = (active or {}).get("requests") or 0
    if n_c < min_samples or n_a < min_samples:
        return CanaryVerdict(False, None, None, None, f"waiting for {min_samples} requests on each side (canary {n_c}, active {n_a})")
    p = two_proportion_p(canary["negative"], n_c, active["negative"], n_a)
    rc, ra = canary["negative"] / n_c, active["negative"] / n_a
    worse = p < alpha
    reason = (f"canary negative rate {rc:.1%} vs active {ra:.1%} over {n_c}/{n_a} requests, "
              f"one-sided two-proportion p = {p:.4f} ({'<' if worse else '>='} {alpha})")
    return CanaryVerdict(worse, p, rc, ra, reason)
