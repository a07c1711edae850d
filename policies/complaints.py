"""Complaints as refinements (DRIFT): the text side. How to ask the serving model for a better
answer given the complaint, and whether the answer it gave addresses the complaint.

A complaint says the answer missed ("too long", "that's not what I asked", the question asked
again) without giving the right answer. The serving model is asked again with the complaint in
front of it; what comes back becomes a preference pair (it over our answer) only if it is
verified, by the strongest judge there is:

1. checks, where the complaint states one ("too long" -> shorter than our answer, "under 50 words",
   "in French", "no emojis": policies.checks, read by the same rules as principles);
2. the teacher, where it is capable (a remote LLM asked whether the new answer addresses the
   complaint better than ours; an answer that does not parse is retried, then reported);
3. otherwise the encoder: the new answer must say something else than ours (cosine below
   SAME_ANSWER) and stay on the request; for a question asked again, it must be closer in meaning
   to the question as re-asked than ours was.

Every candidate must also be a real answer: not empty, not our answer again. An operator reviews
each one before it trains (service.store.refinements).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field

from policies.checks import passes_all
from policies.principles.rules import checks_for
from policies.teacher import StructuredFailure, ask_structured
from policies.text import words

SAME_ANSWER = 0.95  # encoder cosine from which two answers say the same
OFF_TOPIC_SLACK = 0.1  # how much less related to the request the new answer may be than ours

_TOO_LONG = re.compile(r"\b(?:too (?:long|wordy|verbose|much text)|way too long|rambl\w*|waffl\w*|verbose|tl;?dr|"
                       r"shorter|more concise|be concise|get to the point)\b", re.I)
_TOO_SHORT = re.compile(r"\b(?:too (?:short|brief|terse)|more detail\w*|elaborate|expand on|say more|"
                        r"explain more|longer|not enough detail)\b", re.I)

ASK = ("{complaint_line}\n\nAnswer my previous request again, so that this is fixed. "
       "Reply with the new answer only.")


def refinement_messages(messages: Sequence[dict], answer: str, complaint: str, natural: bool) -> list[dict]:
    """The conversation the serving model answers to give a better answer: the request, our
    answer, then the complaint (the user's own follow-up turn for natural feedback, the feedback
    comment otherwise) and the request to answer again."""
    line = complaint.strip() if natural else f"My feedback on your answer: {complaint.strip()}"
    return [dict(m) for m in messages] + [{"role": "assistant", "content": answer},
                                          {"role": "user", "content": ASK.format(complaint_line=line)}]


def stated_checks(complaint: str) -> list[str]:
    """The checks a complaint states (policies.checks text form), none when it states none."""
    out = list(checks_for(complaint))
    if _TOO_SHORT.search(complaint):  # "too short" is no call to be brief (checks_for reads "short")
        return [c for c in out if c != "length"]
    if _TOO_LONG.search(complaint) and not any(c.startswith(("length", "max_words")) for c in out):
        out.append("length")
    return out


@dataclass
class Verification:
    passed: bool
    method: str  # "checks" | "teacher" | "encoder" | "none"
    detail: str


def _basic(original: str, candidate: str | None) -> str | None:
    if candidate is None or not candidate.strip():
        return "no answer came back"
    if candidate.strip() == original.strip():
        return "the new answer is our answer again"
    return None


def verify_by_rules(complaint: str, original: str, candidate: str | None) -> Verification | None:
    """Checks the complaint states (or a length it asks for); None when it asks for nothing checkable."""
    failed = _basic(original, candidate)
    if failed:
        return Verification(False, "none", failed)
    checks = stated_checks(complaint)
    if checks:
        ok = passes_all(checks, candidate, baseline=original)
        return Verification(ok, "checks", ("passes " if ok else "fails ") + "; ".join(checks))
    if _TOO_SHORT.search(complaint):
        n_old, n_new = len(words(original)), len(words(candidate))
        ok = n_new > n_old * 1.2
        return Verification(ok, "checks", f"asked for more: {n_new} words against our {n_old}")
    return None


def verify_by_encoder(complaint: str, request: str, original: str, candidate: str | None,
                      embed: Callable[[str], np.ndarray], repeated: bool) -> Verification:
    failed = _basic(original, candidate)
    if failed:
        return Verification(False, "none", failed)
    v_req, v_old, v_new = embed(request), embed(original), embed(candidate)
    same = float(v_old @ v_new)
    if same >= SAME_ANSWER:
        return Verification(False, "encoder", f"says what our answer said (cosine {same:.2f} >= {SAME_ANSWER})")
    rel_old, rel_new = float(v_req @ v_old), float(v_req @ v_new)
    if rel_new < rel_old - OFF_TOPIC_SLACK:
        return Verification(False, "encoder", f"strays from the request (cosine {rel_new:.2f} against our {rel_old:.2f})")
    if repeated:
        v_again = embed(complaint)
        again_old, again_new = float(v_again @ v_old), float(v_again @ v_new)
        if again_new <= again_old:
            return Verification(False, "encoder", f"no closer to the question asked again "
                                                  f"(cosine {again_new:.2f} against our {again_old:.2f})")
        return Verification(True, "encoder", f"closer to the question asked again ({again_new:.2f} against "
                                              f"our {again_old:.2f}); says something else (cosine {same:.2f})")
    return Verification(True, "encoder", f"says something else than our answer (cosine {same:.2f}) "
                                          f"and stays on the request ({rel_new:.2f} against our {rel_old:.2f})")


class ComplaintVerdict(BaseModel):
    addressed: bool = Field(description="true when answer B fixes what the user complained about in answer A")
    reason: str = Field(default="", description="one short sentence")


JUDGE_PROMPT = """A user asked a chatbot something and complained about its answer (answer A). \
A new answer (answer B) was written for the same request.

Request:
{request}

Answer A:
{original}

The user's complaint about answer A:
{complaint}

Answer B:
{candidate}

Does answer B fix what the user complained about, while still answering the request? \
Reply with only a JSON object: {{"addressed": true or false, "reason": "one short sentence"}}"""


def verify_by_teacher(complaint: str, request: str, original: str, candidate: str | None,
                      teacher: BaseChatModel, retries: int = 2) -> Verification:
    """Raises StructuredFailure (every raw answer) when the teacher never answers in the schema."""
    failed = _basic(original, candidate)
    if failed:
        return Verification(False, "none", failed)
    clip = lambda t: t[:2000]  # noqa: E731
    verdict = ask_structured(teacher, JUDGE_PROMPT.format(request=clip(request), original=clip(original),
                                                          complaint=clip(complaint), candidate=clip(candidate)),
                             ComplaintVerdict, retries=retries)
    return Verification(verdict.addressed, "teacher", verdict.reason or ("addressed" if verdict.addressed else "not addressed"))


__all__ = ["ComplaintVerdict", "StructuredFailure", "Verification", "refinement_messages", "stated_checks",
           "verify_by_encoder", "verify_by_rules", "verify_by_teacher"]
