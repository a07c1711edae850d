"""Natural feedback, the entry points: a verdict on one user turn, or on every turn of a conversation.

The rule layer always runs (policies.natural.rules). A capable teacher, when one is configured,
labels the turn instead (policies.natural.llm), with the rule verdict as its fallback; otherwise
the learned classifier does, when one is given (policies.natural.classifier: encoder features
with the rule verdict among them). With neither, the rule verdict stands.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from policies.natural.classifier import Example, NaturalClassifier
from policies.natural.labels import NaturalFeedback
from policies.natural.llm import detect_llm
from policies.natural.rules import RuleConfig, detect_rules
from policies.teacher import is_capable
from policies.text import message_text


def detect_turn(messages: Sequence[dict], turn: int | None = None, llm=None, flr: float | None = None, *,
                config: RuleConfig = RuleConfig(), force_llm: bool = False, retries: int = 1,
                classifier: NaturalClassifier | None = None) -> NaturalFeedback:
    """Verdict on `messages[turn]` (default: the last message), a user turn right after an
    assistant answer. `flr` is that answer's follow-up likelihood, if known. The LLM layer runs
    when `llm` is capable (`is_capable`), or whenever `force_llm` is set; else `classifier`."""
    if turn is None:
        turn = len(messages) - 1
    if not (0 < turn < len(messages)) or messages[turn].get("role") != "user" \
            or messages[turn - 1].get("role") != "assistant":
        raise ValueError(f"message {turn} is not a user turn that follows an assistant answer")
    text, answer = message_text(messages[turn]), message_text(messages[turn - 1])
    previous = next((message_text(m) for m in reversed(messages[: turn - 1]) if m.get("role") == "user"), "")
    rules = detect_rules(text, answer, previous, flr=flr, config=config)
    if llm is not None and (force_llm or is_capable(llm)):
        return detect_llm(text, answer, previous, llm, rules, retries=retries)
    if classifier is not None:
        return classifier.predict(Example(text, answer, previous)).model_copy(update={"flr": flr})
    return rules


def feedback_turns(messages: Sequence[dict]) -> list[int]:
    """Indices of the user turns that follow an assistant turn."""
    return [i for i in range(1, len(messages))
            if messages[i].get("role") == "user" and messages[i - 1].get("role") == "assistant"]


def detect_conversation(messages: Sequence[dict], llm=None, flr_scores: Mapping[int, float] | None = None, *,
                        config: RuleConfig = RuleConfig(), force_llm: bool = False, retries: int = 1,
                        classifier: NaturalClassifier | None = None) -> list[tuple[int, NaturalFeedback]]:
    """(turn index, verdict) for every user turn that follows an assistant turn.
    `flr_scores` maps the index of an assistant message to its FLR."""
    flr_scores = flr_scores or {}
    return [(i, detect_turn(messages, i, llm=llm, flr=flr_scores.get(i - 1), config=config,
                            force_llm=force_llm, retries=retries, classifier=classifier))
            for i in feedback_turns(messages)]
