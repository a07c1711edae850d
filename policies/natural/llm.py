"""The LLM layer of natural feedback: a capable teacher labels the turn with the guidelines.

Its span is kept only if it occurs in the turn (verbatim, up to case, whitespace and quote
style); when the teacher never answers in the schema, the failure is recorded on the result
(`error`, `raw`) and the rule layer's verdict is used.
"""

from __future__ import annotations

import re

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from policies.natural.labels import Category, NaturalFeedback, Polarity
from policies.teacher import StructuredFailure, ask_structured
from policies.text import straight_quotes

class NaturalLabel(BaseModel):
    """What the teacher answers for one turn."""

    category: Category
    polarity: Polarity
    span: str | None = Field(None, description="the words of the user's turn that carry the feedback, copied exactly")
    principle: bool = False
    reason: str | None = None


SYSTEM_PROMPT = """You label the user's reply to an AI assistant's answer. You see the user's request, the \
assistant's answer, and the user's next turn; decide what the next turn says about the answer.

category (exactly one):
- "repeat_rephrase": the user asks the same thing again, repeated or reworded, because the answer missed it.
- "aware_with_correction": the user says or implies the answer was wrong or not what they wanted AND gives the \
fix: the correct fact, what to change, or a rule to follow ("No, it's Canberra", "I asked for a haiku, not a \
sonnet", "Too formal, make it friendly", "From now on, no emojis in my work emails").
- "aware_without_correction": the user says the answer is wrong, unhelpful or does not work, without saying what \
is right ("That's wrong", "This doesn't work", "You ignored my question").
- "clarification": the user asks what the answer meant, asks to explain part of it, or doubts it ("What do you \
mean by X?", "Can you give an example?", "Are you sure?").
- "positive": thanks, praise, or confirmation that the answer was right or helpful.
- "none": no feedback on the answer: a new question, a request that builds on the answer, small talk, or a reply \
to a question the assistant asked.
A turn that praises and then criticises ("Thanks, but that's wrong") is the criticism.

polarity: "negative" for repeat_rephrase and both aware categories; "positive" for positive; "neutral" for none; \
for clarification "neutral" when it only asks for an explanation and "negative" when it doubts the answer.
span: the shortest part of the user's next turn that carries the feedback, copied character for character; null \
when category is "none".
principle: true only when the turn states a standing rule or preference that should also apply to future answers \
("from now on ...", "whenever I ask about X, ...", "always/never ...", "stop using emojis in my work emails"); \
false for a one-off request.

Answer with only a JSON object: {"category": "...", "polarity": "...", "span": "..." or null, "principle": true or \
false, "reason": "a few words"}"""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit // 2] + "\n[...]\n" + text[-limit // 2:]


def classify_messages(turn: str, answer: str, previous_user: str) -> list:
    """The prompt for one turn (also what a test or a log shows)."""
    return [
        SystemMessage(content=SYSTEM_PROMPT),
        HumanMessage(content=f"User's request:\n<<<{_clip(previous_user, 1500) or '(none)'}>>>\n\n"
                             f"Assistant's answer:\n<<<{_clip(answer, 2000)}>>>\n\n"
                             f"User's next turn:\n<<<{turn}>>>"),
    ]


def verbatim_span(span: str | None, turn: str) -> str | None:
    """`span` as it appears in `turn`, or None. Case, whitespace and straight/curly quote
    differences are forgiven, but what is returned is always the turn's own text."""
    if not span or not span.strip():
        return None
    s = span.strip()
    if s in turn:
        return s
    s = s.strip("\"'“”‘’ ")
    if not s:
        return None
    words = straight_quotes(s).split()
    pattern = r"\s+".join(re.escape(w) for w in words)
    m = re.search(pattern, straight_quotes(turn), re.I)
    return turn[m.start():m.end()] if m else None


def detect_llm(turn: str, answer: str, previous_user: str, llm, rules: NaturalFeedback,
               retries: int = 1) -> NaturalFeedback:
    """The teacher's verdict, checked against the turn; `rules` is the fallback on failure."""
    try:
        label = ask_structured(llm, classify_messages(turn, answer, previous_user), NaturalLabel, retries=retries)
    except StructuredFailure as failure:
        return rules.model_copy(update={"error": str(failure), "raw": list(failure.raw),
                                        "notes": rules.notes + ["LLM answer never parsed; rule result used"]})
    notes: list[str] = []
    confidence = 0.85 if label.category == rules.category else 0.75
    polarity = label.polarity
    span = None
    if label.category == "none":
        polarity = "neutral"
    else:
        span = verbatim_span(label.span, turn)
        if span is None:
            if label.span:
                notes.append(f"LLM span not in the turn, dropped: {label.span[:200]!r}")
            if rules.category == label.category and rules.span:
                span = rules.span
                notes.append("span taken from the rule layer")
            confidence -= 0.2
    return NaturalFeedback(category=label.category, polarity=polarity, span=span, principle=label.principle,
                           source="llm", confidence=round(confidence, 3), cues=rules.cues,
                           similarity=rules.similarity, flr=rules.flr, notes=notes)
