"""The rule layer of natural feedback: phrase cues, reformulation and terms taken from our answer.

Needs no model: the cues of policies.natural.patterns, the similarity of the turn to the
previous user turn (a reformulation), words of our answer the user asks about, and optionally
the answer's follow-up likelihood (adapters.flr) as a prior. The decision between cues, in the
order of the labelling guidelines (policies.natural.labels), is `detect_rules`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from policies.natural.labels import DEFAULT_POLARITY, NaturalFeedback
from policies.natural.patterns import PRAISE_THEN_BUT, Hit, contrast_after, find_hits, sentences
from policies.text import content_words

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
