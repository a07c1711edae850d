"""Natural feedback in the conversation itself: labels, the rule layer, the learned classifier,
the LLM layer, entry points."""

from policies.natural.classifier import Example, NaturalClassifier, examples_from_rows, load_or_fit
from policies.natural.detect import detect_conversation, detect_turn, feedback_turns
from policies.natural.labels import CATEGORIES, DEFAULT_POLARITY, POLARITIES, NaturalFeedback
from policies.natural.llm import classify_messages, detect_llm, verbatim_span
from policies.natural.rules import RuleConfig, detect_rules, similarity

__all__ = ["Example", "NaturalClassifier", "examples_from_rows", "load_or_fit", "detect_conversation", "detect_turn", "feedback_turns", "CATEGORIES", "DEFAULT_POLARITY", "POLARITIES",
           "NaturalFeedback", "classify_messages", "detect_llm", "verbatim_span", "RuleConfig", "detect_rules",
           "similarity"]
