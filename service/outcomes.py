"""Outcomes per adapter version, from what the service already stores, and the canary rule.

A request counts as negative when the user gave it a thumbs-down or the next user turn was
natural negative feedback. The canary is rolled back when its negative rate is significantly
higher than the active version's (one-sided two-proportion z-test, with a minimum sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily

from service.store import Store

BASE = "base"

_SQL = """
SELECT COALESCE(c.adapter_version, 'base') AS version,
       COUNT(*) AS requests,
       SUM(EXISTS(SELECT 1 FROM feedback f WHERE f.completion_id = c.id AND f.thumb = 'up')) AS thumbs_up,
       SUM(EXISTS(SELECT 1 FROM feedback f WHERE f.completion_id = c.id AND f.thumb = 'down')) AS thumbs_down,
       SUM(EXISTS(SELECT 1 FROM natural_feedback n WHERE n.completion_id = c.id AND n.polarity = 'negative')) AS natural_negative,
       SUM(EXISTS(SELECT 1 FROM feedback f WHERE f.completion_id = c.id AND f.thumb = 'down')
           OR EXISTS(SELECT 1 FROM natural_feedback n WHERE n.completion_id = c.id AND n.polarity = 'negative')) AS negative,
       AVG(c.flr) AS mean_flr,
       MIN(c.created) AS first_seen
FROM completions c
WHERE c.status = 'ok' {where}
GROUP BY COALESCE(c.adapter_version, 'base')
"""


def outcomes(store: Store, since: float | None = None) -> dict[str, dict]:
    where, params = "", []
    if since is not None:
        where, params = "AND c.created >= ?", [since]
    out = {}
    for row in store.db.query(_SQL.format(where=where), params):
        n = row["requests"] or 0
        out[row["version"]] = {
            **row,
            "thumbs_up_rate": row["thumbs_up"] / n if n else None,
            "thumbs_down_rate": row["thumbs_down"] / n if n else None,
            "natural_negative_rate": row["natural_negative"] / n if n else None,
            "negative_rate": row["negative"] / n if n else None,
        }
    return out


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


class OutcomeCollector:
    """Prometheus collector: per-version outcomes, read from the store at scrape time."""

    def __init__(self, store_getter):
        self.store_getter = store_getter

    def collect(self):
        store = self.store_getter()
        if store is None:
            return
        data = outcomes(store)
        gauges = {
            "requests": GaugeMetricFamily("refinery_version_requests", "Answered requests per model version", labels=["version"]),
            "thumbs_up_rate": GaugeMetricFamily("refinery_version_thumbs_up_rate", "Share of answers rated up", labels=["version"]),
            "thumbs_down_rate": GaugeMetricFamily("refinery_version_thumbs_down_rate", "Share of answers rated down", labels=["version"]),
            "natural_negative_rate": GaugeMetricFamily("refinery_version_natural_negative_rate", "Share of answers followed by natural negative feedback", labels=["version"]),
            "mean_flr": GaugeMetricFamily("refinery_version_mean_flr", "Mean follow-up likelihood ratio", labels=["version"]),
        }
        for version, row in data.items():
            for key, gauge in gauges.items():
                if row.get(key) is not None:
                    gauge.add_metric([version], float(row[key]))
        yield from gauges.values()
