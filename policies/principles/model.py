"""A principle as C3PO describes one feedback: what to do, where it applies, what changes, how to check.

One piece of feedback (a comment, a corrected answer, a natural-feedback span that states a
rule) becomes one `Principle`: a short imperative `text`, the `domain` where it applies, the
`effect` to change, its `source` (kudos / critique / rewrite), optional programmatic `checks`
(policies.checks' compact form) and the `evidence` it came from. Proposing one is
policies.principles.propose; merging near-duplicates, policies.principles.similarity.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from policies.checks import as_checks, format_check, parse_check
from policies.teacher import StructuredFailure

Source = Literal["kudos", "critique", "rewrite"]
# The domain of a rule stated without one ("never use emojis"): applies to every request.
GLOBAL_DOMAIN = "all requests"


class Evidence(BaseModel):
    """A record a principle came from; `kind` names its table (feedback, natural_feedback) or
    a preference pair."""

    kind: Literal["feedback", "natural", "pair"] = "feedback"
    id: str


class Principle(BaseModel):
    """A proposed principle. Stored as one row of the principles table (checks and evidence as
    JSON); `support` lives on the cluster, not here."""

    text: str = Field(min_length=3, description="short imperative, conditional when scoped")
    domain: str = Field(min_length=1, description="where it applies; GLOBAL_DOMAIN for everywhere")
    effect: str = Field(min_length=1, description="what to change in the answer")
    source: Source
    checks: list[str] = Field(default_factory=list, description="compact checks, e.g. 'starts_with \"X\"'")
    evidence: list[Evidence] = Field(default_factory=list)
    proposer: Literal["rules", "llm"] = "llm"
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)

    @field_validator("checks")
    @classmethod
    def _checks_parse(cls, checks: list[str]) -> list[str]:
        # Normalised through the parser so stored checks always round-trip.
        return [format_check(parse_check(c)) for c in checks]


class FeedbackInput(BaseModel):
    """The feedback to turn into a principle (built by the service from its store)."""

    id: str
    kind: Literal["comment", "correction", "natural_span"]
    text: str = Field(description="the comment, the corrected answer, or the natural-feedback span")
    prompt: str = Field(default="", description="the user's request the answer was for")
    answer: str = Field(default="", description="our answer the feedback is about")
    positive: bool | None = Field(default=None, description="the rating's direction, when known")

    @property
    def evidence(self) -> Evidence:
        return Evidence(kind="natural" if self.kind == "natural_span" else "feedback", id=self.id)


class ProposalFailure(BaseModel):
    """The teacher never gave a parseable proposal. Stored in llm_failures (task, ref, schema,
    raw, errors); never dropped."""

    task: str = "propose_principle"
    ref: str
    schema_name: str
    raw: list[str]
    errors: list[str]

    @classmethod
    def from_structured(cls, exc: StructuredFailure, ref: str, task: str = "propose_principle") -> "ProposalFailure":
        return cls(task=task, ref=ref, schema_name=exc.schema, raw=list(exc.raw), errors=list(exc.errors))


def principle_fields(principle) -> dict:
    """text / domain / effect / checks (parsed) of a Principle, a stored row, or any object carrying them."""
    get = principle.get if isinstance(principle, dict) else (lambda k, d=None: getattr(principle, k, d))
    return {"text": get("text", "") or "", "domain": get("domain", "") or "", "effect": get("effect", "") or "",
            "checks": as_checks(get("checks", None) or [])}
