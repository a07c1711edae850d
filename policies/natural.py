"""Natural feedback: what the user's next turn says about our previous answer.

For a user turn that follows an assistant answer, decide the category (the five of
"Learning from Naturally Occurring Feedback", Don-Yehiya et al. 2024, plus `none`), the
polarity, the feedback span (always a verbatim substring of the turn) and whether the turn
states a standing rule (a `principle`, raw material for policies.principles).

Two layers, so detection works with no LLM and improves with one:

1. Rules (always on, no model): phrase cues (policies/natural_patterns.py), the similarity of
   the turn to the previous user turn (a reformulation), terms of our answer the user asks
   about, and optionally the answer's follow-up likelihood (adapters/flr.py) as a prior.
2. A capable teacher LLM (`policies.teacher.is_capable`) classifies with the category
   guidelines; its span is kept only if it occurs in the turn. When it never answers in the
   schema, the failure is recorded on the result (`error`, `raw`) and the rule result is used.

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

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from policies.natural_patterns import PRAISE_THEN_BUT, Hit, contrast_after, find_hits, normalise, sentences
from policies.teacher import StructuredFailure, ask_structured, is_capable

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
    source: Literal["rules", "llm"] = "rules"
    confidence: float = Field(0.5, ge=0.0, le=1.0)
    cues: list[str] = Field(default_factory=list, description="names of the rule cues that fired")
    similarity: float | None = Field(None, description="similarity of the turn to the previous user turn")
    flr: float | None = Field(None, description="follow-up likelihood of the judged answer, when given")
    error: str | None = Field(None, description="why the LLM layer failed (the rule result was used)")
    raw: list[str] | None = Field(None, description="the LLM's raw answers when it failed")
    notes: list[str] = Field(default_factory=list, description="what was adjusted (span dropped, fallback...)")


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the rule layer.

    `rephrase_threshold`: similarity to the previous user turn above which a request is a
    reformulation. FLR is relative to its model and templates, so it is used only against
    quantiles of the same model's scores: pass `flr_low` / `flr_high` (e.g. the 25th and 75th
    percentiles of recent answers); an answer below `flr_low` lowers the reformulation
    threshold by `flr_shift` (a poorly rated answer makes a similar follow-up more likely a
    repeat), one above `flr_high` raises it.
    """

    rephrase_threshold: float = 0.5
    flr_low: float | None = None
    flr_high: float | None = None
    flr_shift: float = 0.15


# --------------------------------------------------------------------------------------------
# Reformulation: how close a turn is to the previous user turn
# --------------------------------------------------------------------------------------------

_STOPWORDS = frozenset("""
a an the and or but if then so of to in on at by for with from about into over under as is are was were be
been being am do does did doing have has had having i me my mine we our you your yours he she it its they them
their this that these those there here what which who whom whose when where why how can could would should will
shall may might must not no yes please just also too very really actually again still now then than some any
all each every more most much many few such own same other another one get got make tell give know want need
like ok okay hi hey thanks thank hmm well oh let s t d ll re ve m sorry wait um uh exactly
""".split())
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def content_words(text: str) -> list[str]:
    """Lower-cased words minus stop words, with a light plural/possessive strip."""
    out = []
    for w in _WORD.findall(normalise(text).lower()):
        w = w.removesuffix("'s")
        if len(w) > 3 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        if w not in _STOPWORDS:
            out.append(w)
    return out


def _cosine(a: Counter, b: Counter) -> float:
    if not a or not b:
        return 0.0
    dot = sum(v * b[k] for k, v in a.items() if k in b)
    return dot / math.sqrt(sum(v * v for v in a.values()) * sum(v * v for v in b.values()))


def similarity(a: str, b: str) -> float:
    """Similarity of two requests in [0, 1]: the mean of content-word cosine and character
    trigram cosine over the content words (the trigrams forgive "e-bike"/"e-bikes",
    "laptop's"/"laptop"). Function words are left out, or every "How do I ...?" question would
    look like every other."""
    wa, wb = content_words(a), content_words(b)
    if not wa or not wb:
        return 0.0
    words = _cosine(Counter(set(wa)), Counter(set(wb)))
    grams = lambda ws: Counter(g for w in ws for g in (f"#{w}#"[i:i + 3] for i in range(len(w))))  # noqa: E731
    return round(0.5 * words + 0.5 * _cosine(grams(set(wa)), grams(set(wb))), 4)


# --------------------------------------------------------------------------------------------
# Rule layer
# --------------------------------------------------------------------------------------------

def _asks_question(text: str) -> bool:
    return text.rstrip().endswith("?")


def _looks_like_request(text: str) -> bool:
    """A question or an imperative: what a reformulated request looks like."""
    t = text.strip().lower()
    return _asks_question(t) or bool(re.match(
        r"^(?:please |just |so |ok,? |again,? )*(?:tell|give|show|explain|write|list|find|help|what|how|which|who|"
        r"where|when|why|can|could|would|is|are|do|does|i need|i want|i'?m looking)", t))


def _term_question(turn: str, answer: str, previous: str) -> bool:
    """A short question about words that come from our answer and not from the user's request
    ("What's the 10% rule?" after an answer that mentioned it): a request for clarification."""
    if not _asks_question(turn):
        return False
    words = [w for w in content_words(turn) if w not in set(content_words(previous))]
    if not words or len(words) > 6:
        return False
    in_answer = set(content_words(answer))
    return sum(w in in_answer for w in words) / len(words) >= 0.6


def _span(text: str, ranges: list[tuple[int, int]]) -> str | None:
    """The sentences covering `ranges`, as one verbatim slice of `text`."""
    if not ranges:
        return None
    sents = sentences(text) or [(0, len(text))]
    lo = min(s for s, e in sents if e > min(r[0] for r in ranges))
    hi = max(e for s, e in sents if s < max(r[1] for r in ranges))
    return text[lo:hi].strip() or None


def _sentence_ranges(hits: list[Hit]) -> list[tuple[int, int]]:
    return [(h.start, h.end) for h in hits]


def detect_rules(turn: str, answer: str = "", previous_user: str = "", flr: float | None = None,
                 config: RuleConfig = RuleConfig()) -> NaturalFeedback:
    """Rule-based verdict on `turn`, the user's reply to `answer` (which answered
    `previous_user`). Never calls a model."""
    hits = find_hits(turn)
    # "No, I haven't tried that" or "In the morning, please" answers the assistant's question:
    # not a verdict on the answer.
    if answer.rstrip().endswith("?"):
        hits = [h for h in hits if h.cue.name not in ("lead_no", "bare_no", "as_x_please")]
    by_kind: dict[str, list[Hit]] = {}
    for h in hits:
        by_kind.setdefault(h.cue.kind, []).append(h)
    positive = by_kind.get("positive", [])
    negative = list(by_kind.get("negative", []))
    # Praise then "but ...": the clause after the contrast is the verdict.
    if positive:
        cut = contrast_after(turn, min(h.start for h in positive))
        if cut is not None:
            positive = []
            negative.append(Hit(PRAISE_THEN_BUT, cut, len(turn.rstrip())))
            hits.append(negative[-1])
    doubt = by_kind.get("doubt", [])
    strong = [h for h in by_kind.get("correction", []) if h.cue.strong]
    weak = [h for h in by_kind.get("correction", []) if not h.cue.strong]
    principle_hits = by_kind.get("principle", [])
    clarify = by_kind.get("clarify", [])
    repeat = by_kind.get("repeat", [])
    cues = sorted({h.cue.name for h in hits})

    sim = similarity(turn, previous_user) if previous_user.strip() else None
    threshold = config.rephrase_threshold
    if flr is not None:
        if config.flr_low is not None and flr < config.flr_low:
            threshold -= config.flr_shift
        elif config.flr_high is not None and flr > config.flr_high:
            threshold += config.flr_shift
    # A reformulation is normally a request; a very close turn counts whatever its form
    # ("A synonym. Another word for happy.").
    rephrased = sim is not None and sim >= threshold and (_looks_like_request(turn) or sim >= threshold + 0.15)

    principle = bool(principle_hits)
    marker = negative or doubt
    corrections = strong + (weak if marker else [])

    def result(category: str, evidence: list[Hit], confidence: float, polarity: str | None = None,
               span: str | None = None) -> NaturalFeedback:
        if category == "none":
            span = None
        elif span is None:
            ranges = _sentence_ranges(evidence + (principle_hits if principle else []))
            span = _span(turn, ranges) or turn.strip()
        if flr is not None and category != "none":
            # The model's own expectation agreeing with the verdict makes it a little surer.
            good = config.flr_high is not None and flr > config.flr_high
            bad = config.flr_low is not None and flr < config.flr_low
            pol = polarity or DEFAULT_POLARITY[category]
            if (pol == "positive" and good) or (pol == "negative" and bad):
                confidence += 0.05
            elif (pol == "positive" and bad) or (pol == "negative" and good):
                confidence -= 0.05
        return NaturalFeedback(category=category, polarity=polarity or DEFAULT_POLARITY[category], span=span,
                               principle=principle, source="rules", confidence=round(min(max(confidence, 0.05), 0.95), 3),
                               cues=cues, similarity=sim, flr=flr)

    if corrections:
        return result("aware_with_correction", corrections + negative + doubt, 0.75 if strong else 0.65)
    if principle:
        if positive and not marker:
            return result("positive", positive, 0.7)
        return result("aware_with_correction", negative + doubt, 0.7)
    if repeat:
        return result("repeat_rephrase", [], 0.75, span=turn.strip())
    if negative:
        return result("aware_without_correction", negative, 0.7)
    if doubt:
        return result("clarification", doubt + clarify, 0.65, polarity="negative")
    # Before similarity: "What do you mean by capital?" reuses the question's words.
    if clarify:
        return result("clarification", clarify, 0.7)
    if rephrased:
        return result("repeat_rephrase", [], min(0.9, 0.4 + (sim or 0) / 2), span=turn.strip())
    if _term_question(turn, answer, previous_user):
        return result("clarification", [], 0.55, span=turn.strip())
    if positive:
        return result("positive", positive, 0.75)
    conf = 0.6
    if sim is not None and sim >= threshold - 0.15:
        conf = 0.45  # close to a reformulation: not sure it is a new request
    return result("none", [], conf)


# --------------------------------------------------------------------------------------------
# LLM layer
# --------------------------------------------------------------------------------------------

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
    words = normalise(s).split()
    pattern = r"\s+".join(re.escape(w) for w in words)
    m = re.search(pattern, normalise(turn), re.I)
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


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------

def _content(message: dict) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def detect_turn(messages: Sequence[dict], turn: int | None = None, llm=None, flr: float | None = None, *,
                config: RuleConfig = RuleConfig(), force_llm: bool = False, retries: int = 1) -> NaturalFeedback:
    """Verdict on `messages[turn]` (default: the last message), a user turn right after an
    assistant answer. `flr` is that answer's follow-up likelihood, if known. The LLM layer runs
    when `llm` is capable (`is_capable`), or whenever `force_llm` is set."""
    if turn is None:
        turn = len(messages) - 1
    if not (0 < turn < len(messages)) or messages[turn].get("role") != "user" \
            or messages[turn - 1].get("role") != "assistant":
        raise ValueError(f"message {turn} is not a user turn that follows an assistant answer")
    text, answer = _content(messages[turn]), _content(messages[turn - 1])
    previous = next((_content(m) for m in reversed(messages[: turn - 1]) if m.get("role") == "user"), "")
    rules = detect_rules(text, answer, previous, flr=flr, config=config)
    if llm is not None and (force_llm or is_capable(llm)):
        return detect_llm(text, answer, previous, llm, rules, retries=retries)
    return rules


def feedback_turns(messages: Sequence[dict]) -> list[int]:
    """Indices of the user turns that follow an assistant turn."""
    return [i for i in range(1, len(messages))
            if messages[i].get("role") == "user" and messages[i - 1].get("role") == "assistant"]


def detect_conversation(messages: Sequence[dict], llm=None, flr_scores: Mapping[int, float] | None = None, *,
                        config: RuleConfig = RuleConfig(), force_llm: bool = False,
                        retries: int = 1) -> list[tuple[int, NaturalFeedback]]:
    """(turn index, verdict) for every user turn that follows an assistant turn.
    `flr_scores` maps the index of an assistant message to its FLR."""
    flr_scores = flr_scores or {}
    return [(i, detect_turn(messages, i, llm=llm, flr=flr_scores.get(i - 1), config=config,
                            force_llm=force_llm, retries=retries))
            for i in feedback_turns(messages)]
