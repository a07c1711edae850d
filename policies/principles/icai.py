"""Inverse Constitutional AI: principles proposed from preference pairs, voted on by a judge,
and the resulting constitution measured by how well it lets a judge reconstruct the preferences.

- `propose_from_pair`: the teacher explains one preference as "Select the response that ...".
- `vote`: does a principle prefer the chosen or the rejected answer of a pair, or neither?
  The two answers are shown in both orders across pairs (`flip`), so a judge that always says
  "A" gives as many "for" as "against" votes instead of a fake signal.
- `score_principle`: for / against / not_relevant / invalid counts, agreement, relevance; kept
  when for > against and relevance is high enough, ranked by for - against (`rank_principles`).
- `reconstruct`: agreement of a judge with the preferences, with or without a constitution.

Unparseable judge answers are counted as `invalid` and reported, never silently dropped.
"""

from __future__ import annotations

import re
from typing import Literal, Sequence, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from pydantic import BaseModel, Field, field_validator

from policies.principles.model import Principle, ProposalFailure
from policies.teacher import LocalChatModel, StructuredFailure, ask_structured, extract_json

Vote = Literal["for", "against", "not_relevant", "invalid"]
T = TypeVar("T")
SELECT = "Select the response that"


class Pair(BaseModel):
    """A preference: `chosen` was preferred over `rejected` as an answer to `prompt`."""

    prompt: str
    chosen: str
    rejected: str
    id: str | None = None


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def _invoke(llm: BaseChatModel, prompt: str, max_tokens: int) -> str:
    # The local wrapper honours a per-call token budget (a judge's verdict is a few tokens; a
    # 135M model that is not stopped rambles on for the whole default budget). Other chat
    # models keep their own configured limits: not every class accepts `max_tokens`.
    messages = [HumanMessage(content=prompt)]
    if isinstance(llm, LocalChatModel):
        answer = llm.invoke(messages, max_tokens=max_tokens)
    else:
        answer = llm.invoke(messages)
    return answer.text if hasattr(answer, "text") else str(answer.content)


# -- proposing from pairs ----------------------------------------------------------------------

class PairPrinciples(BaseModel):
    """The teacher's answer to PAIR_PROMPT."""

    principles: list[str] = Field(min_length=1)

    @field_validator("principles")
    @classmethod
    def _select_form(cls, items: list[str]) -> list[str]:
        out = []
        for p in items:
            p = " ".join(str(p).split()).strip().rstrip(" .")
            body = p[len(SELECT):].strip() if p.lower().startswith(SELECT.lower()) else p
            if len(body.split()) < 2:  # "Select the response that" alone says nothing
                continue
            out.append(f"{SELECT} {body[:1].lower()}{body[1:]}")
        if not out:
            raise ValueError('no principle: each must say what the preferred response does, in two words or more')
        return out


PAIR_PROMPT = """A person compared two answers to the same instruction and preferred one of them.
Write {n} short principle(s) that would explain this preference, each a sentence starting with
"Select the response that". A principle should name what the preferred answer does and the other does not.

Instruction:
{prompt}

Preferred answer:
{chosen}

Other answer:
{rejected}

Answer with only JSON: {{"principles": ["Select the response that ..."]}}"""


class PairProposal(BaseModel):
    pair_id: str | None
    principles: list[str]
    salvaged: bool = Field(default=False, description="read from a non-JSON answer")


_SALVAGE = re.compile(r"select the response that[^\n\"{}\[\]]{3,200}", re.I)


def propose_from_pair(pair: Pair, llm: BaseChatModel, n: int = 1, retries: int = 1) -> PairProposal | ProposalFailure:
    """ICAI's proposal step for one pair. A non-JSON answer that still contains a sentence
    "Select the response that ..." is salvaged (and marked so); otherwise a ProposalFailure
    with every raw answer."""
    prompt = PAIR_PROMPT.format(n=n, prompt=_clip(pair.prompt, 1000), chosen=_clip(pair.chosen, 1500),
                                rejected=_clip(pair.rejected, 1500))
    try:
        answer = ask_structured(llm, prompt, PairPrinciples, retries=retries)
        return PairProposal(pair_id=pair.id, principles=answer.principles[:n])
    except StructuredFailure as exc:
        found = [" ".join(m.group(0).split()).rstrip(" .,;:") for raw in exc.raw for m in _SALVAGE.finditer(raw)]
        found = [f for f in dict.fromkeys(found) if len(f.split()) > len(SELECT.split()) + 1]
        if found:
            return PairProposal(pair_id=pair.id, principles=found[:n], salvaged=True)
        return ProposalFailure.from_structured(exc, ref=pair.id or "", task="propose_from_pair")


# -- judging -----------------------------------------------------------------------------------

VOTE_PROMPT = """Principle: "{principle}"

Instruction:
{prompt}

Response A:
{a}

Response B:
{b}

Which response does the principle prefer? Answer "A" or "B". If the principle has nothing to say
about these two responses, answer "neither".
Answer with only JSON: {{"preferred": "A"}} or {{"preferred": "B"}} or {{"preferred": "neither"}}"""

JUDGE_PROMPT = """{rules}Instruction:
{prompt}

Response A:
{a}

Response B:
{b}

Which response is better{by_rules}? Answer with only JSON: {{"preferred": "A"}} or {{"preferred": "B"}}"""

_KEYS = ("preferred", "choice", "answer", "response", "winner", "better")


def parse_choice(raw: str) -> Literal["A", "B", "neither"] | None:
    """The judge's pick in an answer: JSON first, then a bare letter or "Response A/B";
    None when it cannot be read (counted as invalid by callers)."""
    value = None
    try:
        data = extract_json(raw)
        if isinstance(data, dict):
            value = next((str(data[k]) for k in _KEYS if k in data), None)
    except ValueError:
        pass
    text = (value if value is not None else raw).strip()
    low = text.lower()
    m = re.fullmatch(r"\W*(?:response\s+|answer\s+)?([ab])\W*", low)
    if m:
        return m.group(1).upper()  # type: ignore[return-value]
    if re.match(r"\W*(?:neither|none|not relevant|no preference|equal|tie)\b", low):
        return "neither"
    # A leading capital letter as a verdict ("B. It is shorter", "A is better"), not an article
    # ("A good answer would ...").
    m = re.match(r"\W*(?:[Rr]esponse\s+|[Aa]nswer\s+)?([AB])(?:\s*$|\s*[.,:;)\]!\n]|\s+(?:is|because|as|since)\b)", text)
    if m:
        return m.group(1)  # type: ignore[return-value]
    named = set(re.findall(r"\bresponse\s+([ab])\b", low))
    if len(named) == 1:
        return named.pop().upper()  # type: ignore[return-value]
    if re.search(r"\b(?:neither|not relevant|no preference)\b", low):
        return "neither"
    return None


def vote_detail(principle_text: str, pair: Pair, llm: BaseChatModel, flip: bool = False,
                max_tokens: int = 24) -> tuple[Vote, str]:
    """(vote, raw answer). `flip` shows the rejected answer as A."""
    a, b = (pair.rejected, pair.chosen) if flip else (pair.chosen, pair.rejected)
    raw = _invoke(llm, VOTE_PROMPT.format(principle=principle_text, prompt=_clip(pair.prompt, 1000),
                                          a=_clip(a), b=_clip(b)), max_tokens)
    choice = parse_choice(raw)
    if choice is None:
        return "invalid", raw
    if choice == "neither":
        return "not_relevant", raw
    picked_chosen = (choice == "A") != flip
    return ("for" if picked_chosen else "against"), raw


def vote(principle_text: str, pair: Pair, llm: BaseChatModel, flip: bool = False) -> Vote:
    """Does the principle prefer the pair's chosen answer ("for"), its rejected one ("against"),
    neither ("not_relevant"); "invalid" when the judge's answer cannot be read."""
    return vote_detail(principle_text, pair, llm, flip)[0]


def score_principle(principle: str | Principle, pairs: Sequence[Pair], llm: BaseChatModel,
                    keep_raw: int = 5) -> dict:
    """Vote `principle` on every pair, alternating the A/B order (pair i is flipped when i is odd).

    Returns {"for", "against", "not_relevant", "invalid", "total", "agreement", "relevance",
    "invalid_raw"}: agreement = for / (for + against), the share of relevant votes that side with
    the preference; relevance = (for + against) / valid votes. Both None without such votes.
    `invalid_raw` keeps the first `keep_raw` unreadable answers for the record.
    """
    text = principle.text if isinstance(principle, Principle) else principle
    counts = {"for": 0, "against": 0, "not_relevant": 0, "invalid": 0}
    invalid_raw: list[str] = []
    for i, pair in enumerate(pairs):
        v, raw = vote_detail(text, pair, llm, flip=bool(i % 2))
        counts[v] += 1
        if v == "invalid" and len(invalid_raw) < keep_raw:
            invalid_raw.append(raw[:500])
    relevant = counts["for"] + counts["against"]
    valid = len(pairs) - counts["invalid"]
    return {**counts, "total": len(pairs),
            "agreement": round(counts["for"] / relevant, 4) if relevant else None,
            "relevance": round(relevant / valid, 4) if valid else None,
            "invalid_raw": invalid_raw}


def keep_principle(score: dict, min_relevance: float = 0.1) -> bool:
    """ICAI's filter: more votes for than against, and relevant to enough pairs."""
    return score["for"] > score["against"] and (score["relevance"] or 0.0) >= min_relevance


def rank_principles(scored: Sequence[tuple[T, dict]], min_relevance: float = 0.1) -> list[tuple[T, dict]]:
    """The kept (item, score) pairs, best first by for - against (then by agreement)."""
    kept = [s for s in scored if keep_principle(s[1], min_relevance)]
    return sorted(kept, key=lambda s: (s[1]["for"] - s[1]["against"], s[1]["agreement"] or 0.0), reverse=True)


def reconstruct(pairs: Sequence[Pair], llm: BaseChatModel, constitution: Sequence[str] | None = None,
                max_tokens: int = 24) -> dict:
    """ICAI's agreement: the share of pairs where the judge, given the constitution (or none),
    picks the chosen answer. A/B order alternates as in `score_principle`.

    Returns {"agreement" (correct / total: an invalid answer counts as a miss), "agreement_valid"
    (correct / readable answers), "correct", "wrong", "invalid" (unreadable or "neither"),
    "total", "picks" (per pair: "chosen", "rejected" or "invalid")}.
    """
    rules = by_rules = ""
    if constitution:
        rules = "Judge by these principles:\n" + "\n".join(f"{i + 1}. {p}" for i, p in enumerate(constitution)) + "\n\n"
        by_rules = " according to the principles"
    picks = []
    for i, pair in enumerate(pairs):
        flip = bool(i % 2)
        a, b = (pair.rejected, pair.chosen) if flip else (pair.chosen, pair.rejected)
        raw = _invoke(llm, JUDGE_PROMPT.format(rules=rules, prompt=_clip(pair.prompt, 1000), a=_clip(a), b=_clip(b),
                                               by_rules=by_rules), max_tokens)
        choice = parse_choice(raw)
        if choice not in ("A", "B"):
            picks.append("invalid")
        else:
            picks.append("chosen" if (choice == "A") != flip else "rejected")
    correct, wrong = picks.count("chosen"), picks.count("rejected")
    total = len(pairs)
    return {"agreement": round(correct / total, 4) if total else None,
            "agreement_valid": round(correct / (correct + wrong), 4) if correct + wrong else None,
            "correct": correct, "wrong": wrong, "invalid": picks.count("invalid"), "total": total, "picks": picks}
