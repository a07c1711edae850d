"""Proposing one principle from one feedback: a capable teacher writes it, or the rule reader does.

A capable teacher (`is_capable(llm)`) answers in the `ProposalAnswer` schema; an answer that never
parses comes back as a `ProposalFailure` with the raw text, for the caller to record. Without a
capable teacher, policies.principles.rules reads explicit rule statements ("from now on, no
emojis in my work emails") and corrections.
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field, field_validator

from policies.checks import METRICS, format_check, parse_check
from policies.principles.model import GLOBAL_DOMAIN, FeedbackInput, Principle, ProposalFailure, Source
from policies.principles.rules import propose_by_rules
from policies.teacher import StructuredFailure, ask_structured, is_capable

class ProposalAnswer(BaseModel):
    """What the teacher answers; next to PROPOSAL_PROMPT, which describes it."""

    text: str = Field(min_length=3)
    domain: str = Field(min_length=1)
    effect: str = Field(min_length=1)
    source: Source
    checks: list[str] = Field(default_factory=list)

    @field_validator("checks")
    @classmethod
    def _checks_parse(cls, checks: list[str]) -> list[str]:
        return [format_check(parse_check(c)) for c in checks]


PROPOSAL_PROMPT = f"""You turn one piece of user feedback on a chatbot's answer into one principle for the chatbot.
A principle is a short imperative, conditional when it should only apply to some requests, e.g.
"When the user asks about a music genre, ask them what they would like to learn about."
Fields:
- text: the principle.
- domain: where it applies, a short phrase ("writing emails to the user's boss", "gardening questions");
  "{GLOBAL_DOMAIN}" only if the user clearly wants it everywhere. Do not make it wider than the feedback says.
- effect: what should change in the answer ("no emojis", "begin with 'Summary:'").
- source: "kudos" (the user praised something), "critique" (the user criticised something) or
  "rewrite" (the user rewrote our answer).
- checks: programmatic checks an answer in the domain must pass, as `metric value` strings with a JSON
  value, only when one clearly fits, else []. Metrics: {", ".join(METRICS)}.
  Examples: starts_with "Summary:"   ends_with "Best, Ana"   contains_none_strings ["😀", "🎉"]
  contains_all_strings ["Background:", "Event:"]   doesnt_start_with "Sure"   is_language "de"   length
  (length: no longer than the usual answer).
Answer with only a JSON object: {{"text": ..., "domain": ..., "effect": ..., "source": ..., "checks": [...]}}"""

_KIND_LABEL = {
    "comment": "The user's comment on the answer",
    "correction": "The user's corrected version of the answer",
    "natural_span": "What the user said next",
}


def _clip(text: str, limit: int = 1500) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def proposal_messages(feedback: FeedbackInput) -> list:
    body = (f"The user's request:\n{_clip(feedback.prompt)}\n\nThe chatbot's answer:\n{_clip(feedback.answer)}\n\n"
            f"{_KIND_LABEL[feedback.kind]}:\n{_clip(feedback.text)}")
    return [SystemMessage(content=PROPOSAL_PROMPT), HumanMessage(content=body)]


def propose_principle(
    feedback: FeedbackInput, llm: BaseChatModel | None, retries: int = 2
) -> Principle | ProposalFailure | None:
    """One principle from one feedback.

    With a capable teacher: its structured answer (proposer "llm"), or a ProposalFailure with
    every raw answer. Otherwise (None, or the small local model): the rule reader (proposer
    "rules"), which returns None when the feedback states no rule and is not a correction.
    """
    if not is_capable(llm):
        return propose_by_rules(feedback)
    try:
        answer = ask_structured(llm, proposal_messages(feedback), ProposalAnswer, retries=retries)
    except StructuredFailure as exc:
        return ProposalFailure.from_structured(exc, ref=feedback.id)
    return Principle(**answer.model_dump(), evidence=[feedback.evidence], proposer="llm", confidence=0.8)
