"""The canary rule: is a canary version significantly worse than the active one?

Thumbs alone are not enough: a version trained towards thumbs-up can drift into sycophancy,
answers that please at first and that users then correct or complain about, often longer ones
(RLUF). So the canary is judged on several outcomes from the store (service.store.outcomes):

- the negative rate (a thumbs-down, or the next user turn was natural negative feedback),
- the correction rate (an explicit correction, or a natural `aware_with_correction` turn),
- the natural-dissatisfaction rate (natural negative feedback alone, which needs no clicks),
- the answer length in completion tokens.

The rates get a one-sided two-proportion z-test each, the length a one-sided Mann-Whitney U
test for a rise, which must also be a real one (the canary's mean at least `min_length_rise`
above the active version's) so that a trivial shift in a large sample does not roll back.
Every metric is tested at alpha / (number of metrics tested) (Bonferroni), so testing four
outcomes does not quadruple the false rollbacks. Nothing is judged before both sides have
`min_samples` requests; a metric whose counts are missing (or with fewer measured lengths)
is left out. The canary is worse when any metric is; the verdict names which, and carries
the per-metric breakdown the API shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

# (metric, the count it tests, what the reason calls it)
RATES = (("negative", "negative", "negative rate"),
         ("corrections", "corrections", "correction rate"),
         ("natural_negative", "natural_negative", "natural-dissatisfaction rate"))
LENGTH = "answer_tokens"
MIN_LENGTH_RISE = 0.2


@dataclass
class CanaryVerdict:
    worse: bool
    p_value: float | None  # the smallest p-value of the metrics tested; None while waiting
    canary_rate: float | None  # negative rates, as before
    active_rate: float | None
    reason: str
    failed: list[str] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)


def two_proportion_p(bad_a: int, n_a: int, bad_b: int, n_b: int) -> float:
    """One-sided p-value that proportion a (canary) is larger than b (active)."""
    p_pool = (bad_a + bad_b) / (n_a + n_b)
    se = math.sqrt(p_pool * (1 - p_pool) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0
    z = (bad_a / n_a - bad_b / n_b) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


def length_rise_p(canary: Sequence[float], active: Sequence[float]) -> float:
    """One-sided Mann-Whitney U p-value that the canary's lengths are larger than the active's."""
    from scipy.stats import mannwhitneyu  # scipy comes with scikit-learn; loaded only when judging

    p = float(mannwhitneyu(canary, active, alternative="greater").pvalue)
    return 1.0 if math.isnan(p) else p


def _rate_checks(canary: dict, active: dict, n_c: int, n_a: int) -> list[dict]:
    checks = []
    for metric, key, label in RATES:
        if canary.get(key) is None or active.get(key) is None:
            continue
        bad_c, bad_a = canary[key], active[key]
        checks.append({"metric": metric, "label": label, "canary": bad_c / n_c, "active": bad_a / n_a,
                       "canary_count": bad_c, "active_count": bad_a, "canary_n": n_c, "active_n": n_a,
                       "p_value": two_proportion_p(bad_c, n_c, bad_a, n_a)})
    return checks


def _length_check(canary_lengths: Sequence[float], active_lengths: Sequence[float], min_rise: float) -> dict:
    mean_c = sum(canary_lengths) / len(canary_lengths)
    mean_a = sum(active_lengths) / len(active_lengths)
    rise = mean_c / mean_a - 1 if mean_a > 0 else None  # None: from nothing (no JSON infinity)
    return {"metric": LENGTH, "label": "mean answer length", "canary": mean_c, "active": mean_a,
            "canary_n": len(canary_lengths), "active_n": len(active_lengths), "rise": rise,
            "min_rise": min_rise, "real_rise": mean_c > 0 if rise is None else rise >= min_rise,
            "p_value": length_rise_p(canary_lengths, active_lengths)}


def _describe(check: dict) -> str:
    if check["metric"] == LENGTH:
        rise = "from none" if check["rise"] is None else f"{check['rise']:+.0%}"
        text = (f"{check['label']} {check['canary']:.1f} vs {check['active']:.1f} tokens "
                f"({rise}, needs +{check['min_rise']:.0%}) over {check['canary_n']}/{check['active_n']} answers")
    else:
        text = f"{check['label']} {check['canary']:.1%} vs {check['active']:.1%}"
    sign = "<" if check["p_value"] < check["alpha"] else ">="
    return f"{text}, p = {check['p_value']:.3g} ({sign} {check['alpha']:.4g})"


def judge_canary(canary: dict | None, active: dict | None, min_samples: int, alpha: float,
                 canary_lengths: Sequence[float] | None = None, active_lengths: Sequence[float] | None = None,
                 min_length_rise: float = MIN_LENGTH_RISE) -> CanaryVerdict:
    """Judge a canary's outcomes (per_version rows since it started) against the active
    version's; the answer lengths (answer_lengths over the same time) add the length test."""
    canary, active = canary or {}, active or {}
    n_c, n_a = canary.get("requests") or 0, active.get("requests") or 0
    if n_c < min_samples or n_a < min_samples:
        return CanaryVerdict(False, None, None, None, f"waiting for {min_samples} requests on each side (canary {n_c}, active {n_a})")
    checks = _rate_checks(canary, active, n_c, n_a)
    if canary_lengths is not None and active_lengths is not None \
            and min(len(canary_lengths), len(active_lengths)) >= min_samples:
        checks.append(_length_check(canary_lengths, active_lengths, min_length_rise))
    if not checks:
        return CanaryVerdict(False, None, None, None, "no outcome to judge")
    each = alpha / len(checks)
    for check in checks:
        check["alpha"] = each
        check["worse"] = check["p_value"] < each and check.get("real_rise", True)
    failed = [c["metric"] for c in checks if c["worse"]]
    head = ("canary worse on " + ", ".join(c["label"] for c in checks if c["worse"])) if failed \
        else "canary not significantly worse"
    reason = (f"{head} over {n_c}/{n_a} requests (one-sided tests, Bonferroni alpha {alpha} / {len(checks)}): "
              + "; ".join(_describe(c) for c in checks))
    negative = next((c for c in checks if c["metric"] == "negative"), None)
    return CanaryVerdict(bool(failed), min(c["p_value"] for c in checks),
                         negative["canary"] if negative else None, negative["active"] if negative else None,
                         reason, failed, checks)
