"""The refinement job's recipe: what synthesis, training and the gate use where a job's params say
nothing, and the check that a job's overrides name real settings.

Measured on the gardening rule with the embedded model (10 held-out prompts per scope; README,
Benchmarks, "C3PO"): with the paper's per-token NLL at 0.1 / 0.2 on 20 + 20 rows the marker
leaked to 30-50 % of near- and out-of-scope answers, because a changed first token costs
1/length of a per-token mean. Minimal-edit pairs (chosen = the baseline repaired by the checks,
so a pair differs by the rule alone), the NLL summed over the answer (the scale of DPO's
log-ratios) at 0.03 / 0.06, and 40 + 40 constraint rows (baselines only: cheap) gave 80 %
adherence and no leak.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from adapters.gate import GateThresholds
from adapters.train_config import TrainConfig
from policies.synthesis import SynthesisConfig

RECIPE = {"synthesis": {"prefer_minimal_edit": True, "near_weight": 0.03, "out_weight": 0.06,
                        "n_near_scope": 40, "n_out_of_scope": 40},
          "train": {}, "gate": {}}  # `refinery train`'s defaults (adapters.train_config) are the job's
SECTIONS = ("synthesis", "train", "gate")


def with_recipe(params: dict | None) -> dict:
    """The job's params over the recipe, section by section."""
    params = params or {}
    return {k: {**RECIPE[k], **params.get(k, {})} for k in SECTIONS}


def check_params(params: dict | None) -> dict:
    """Job overrides {"synthesis": {...}, "train": {...}, "gate": {...}}, checked against the
    configs they feed, so a typo is refused when the job is queued rather than when it runs."""
    params = params or {}
    if not isinstance(params, dict) or not set(params) <= set(SECTIONS):
        raise ValueError('params is an object with keys among "synthesis", "train" and "gate"')
    for key, cls in (("synthesis", SynthesisConfig), ("train", TrainConfig), ("gate", GateThresholds)):
        section = params.get(key, {})
        if not isinstance(section, dict):
            raise ValueError(f"params.{key} must be an object")
        known = {f.name for f in fields(TrainConfig)} - {"model"} if key == "train" else set(cls.model_fields)
        unknown = set(section) - known
        if unknown:
            raise ValueError(f"params.{key}: unknown fields {sorted(unknown)}; known: {sorted(known)}")
        try:
            cls(**section)
        except Exception as e:  # pydantic ValidationError, dataclass TypeError/ValueError
            raise ValueError(f"params.{key}: {e}") from e
    return params


@dataclass
class Recipe:
    """The three configs one distillation runs with."""

    synthesis: SynthesisConfig
    train: TrainConfig
    gate: GateThresholds

    @classmethod
    def from_params(cls, params: dict | None = None, model: str | None = None) -> "Recipe":
        """The refinement job's recipe with `params` (checked) over it."""
        p = with_recipe(check_params(params))
        return cls(SynthesisConfig(**p["synthesis"]), TrainConfig(model=model, **p["train"]), GateThresholds(**p["gate"]))
