"""Natural feedback, the labels: what the user's next turn says about our previous answer.

For a user turn that follows an assistant answer, decide the category (the five of
"Learning from Naturally Occurring Feedback", Don-Yehiya et al. 2024, plus `none`), the
polarity, the feedback span (always a verbatim substring of the turn) and whether the turn
states a standing rule (a `principle`, raw material for policies.principles).

Two layers, so detection works with no LLM and improves with one:

1. Rules (always on, no model): phrase cues (policies.natural.patterns), the similarity of
   the turn to the previous user turn (a reformulation), terms of our answer the user asks
   about, and optionally the answer's follow-up likelihood (adapters.flr) as a prior; policies.natural.rules.
2. A capable teacher LLM (`policies.teacher.is_capable`) classifies with the category
   guidelines; its span is kept only if it occurs in the turn. When it never answers in the
   schema, the failure is recorded on the result (`error`, `raw`) and the rule result is used; policies.natural.llm.

Labelling guidelines (shared by the rules, the LLM prompt and bench/data/natural_labelled.jsonl):
- a praise followed by a criticism ("thanks, but that's wrong") is the criticism;
- a standing rule stated right after an answer ("from now on, no emojis in my work emails")
  says what to change, so it is `aware_with_correction` (negative) unless the turn is
  otherwise praise (then `positive`, still `principle`);
- `clarification` is neutral when it asks what the answer meant and negative when it doubts
  the answer ("are you sure?");
- a new question, a request building on the answer, or an answer to a question the assistant
  asked ("No, I haven't tried that") is `none`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Category = Literal["repeat_rephrase", "aware_with_correction", "aware_without_correction", "clarification",
                   "positive", "none"]
Polarity = Literal["negative", "positive", "neutral"]
CATEGORIES: tuple[str, ...] = ("repeat_rephrase", "aware_with_correction", "aware_without_correction",
                               "clarification", "positive", "none")
POLARITIES: tuple[str, ...] = ("negative", "positive", "neutral")
DEFAULT_POLARITY = {"repeat_rephrase": "negative", "aware_with_correction": "negative",
                    "aware_without_correction": "negative", "clarification": "neutral", "positive": "positive",
                    "none": "neutral"}


class NaturalFeedback(BaseModel):
    """The verdict on one user turn that follows an assistant answer."""

    category: Category
    polarity: Polarity
    span: str | None = Field(None, description="verbatim substring of the user turn; None when category is none")
    principle: bool = Field(False, description="the turn states a standing rule for future answers")
    source: Literal["rules", "encoder", "llm"] = "rules"
    confidence: float = Field(0.5, ge=0.0, le=1.0)
    cues: list[str] = Field(default_factory=list, description="names of the rule cues that fired")
    similarity: float | None = Field(None, description="similarity of the turn to the previous user turn")
    flr: float | None = Field(None, description="follow-up likelihood of the judged answer, when given")
    error: str | None = Field(None, description="why the LLM layer failed (the rule result was used)")
    raw: list[str] | None = Field(None, description="the LLM's raw answers when it failed")
    notes: list[str] = Field(default_factory=list, description="what was adjusted (span dropped, fallback...)")
