"""Step 2 of C3PO synthesis: revisions of the baseline answers, and their verification.

The served model (or a capable teacher) revises each in-scope baseline given the effect.
Revisions are **verified**: with programmatic checks a failing revision is repaired where the
check is constructive and dropped otherwise; a useless revision (empty, unchanged, or a stub
such as just the marker) falls back to repairing the baseline itself, which for a
`starts_with` rule is a perfect chosen answer. Without checks a capable teacher judges the
revision; otherwise it is kept and flagged "unverified".
"""

from __future__ import annotations

import re
from typing import Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel

from policies.checks import Check, passes_all, verify_revision
from policies.synthesis.records import GenerateBatchFn, RevisionRecord, SynthesisConfig, SynthesisFailure
from policies.teacher import StructuredFailure, ask_structured

REVISION_PROMPT = """Here is a request and an answer to it.

Request:
{prompt}

Answer:
{baseline}

Revise the answer so that it follows this rule: {rule}. Keep everything else the same.
Reply with only the revised answer."""


class RevisionJudgement(BaseModel):
    follows_rule: bool
    keeps_rest: bool = True


JUDGE_REVISION_PROMPT = """A chatbot must follow this rule: {rule}
Request: {prompt}
Original answer: {baseline}
Revised answer: {revision}
Does the revised answer follow the rule, and does it keep the rest of the original answer's content?
Answer with only JSON: {{"follows_rule": true or false, "keeps_rest": true or false}}"""

# "Sure! Here is the revised answer:" and the like: a small model's wrapping, not the answer.
_PREAMBLE = re.compile(r"^\s*(?:sure[,!.]?\s*)?(?:here(?:'s| is) (?:the|a|your|my) revised [^:\n]{0,40}:|"
                       r"revised (?:answer|version)\s*:)\s*", re.I)


def clean_revision(text: str | None) -> str:
    text = _PREAMBLE.sub("", (text or "").strip()).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _markers(checks: Sequence[Check]) -> list[str]:
    out: list[str] = []
    for c in checks:
        if isinstance(c.value, str):
            out.append(c.value)
        elif isinstance(c.value, list):
            out.extend(c.value)
    return out


def is_stub(revision: str, baseline: str, checks: Sequence[Check], effect: str, min_ratio: float) -> bool:
    """Empty, unchanged, or (for rules that are not about brevity) too short to be the answer once
    the check markers are removed: "Green thumb:" alone passes `starts_with` and teaches nothing."""
    if not revision.strip() or revision.strip() == baseline.strip():
        return True
    if any(c.metric == "length" for c in checks) or re.search(r"concise|short|brief", effect, re.I):
        return False
    body = revision
    for m in _markers(checks):
        body = re.sub(re.escape(m), " ", body, flags=re.I)
    return len(body.strip()) < min_ratio * len(baseline.strip())


def revise_all(items: list[tuple[str, str]], rule: str, generate_fn: GenerateBatchFn, teacher: BaseChatModel | None,
            cfg: SynthesisConfig, failures: list[SynthesisFailure]) -> list[str | None]:
    """One revision per (prompt, baseline); None where the teacher call failed."""
    prompts = [REVISION_PROMPT.format(prompt=p, baseline=b, rule=rule) for p, b in items]
    if teacher is None:
        answers = generate_fn([[{"role": "user", "content": p}] for p in prompts],
                              cfg.max_new_tokens + cfg.revision_extra_tokens)
        return [clean_revision(a) for a in answers]
    out: list[str | None] = []
    for (prompt, _), text in zip(items, prompts):
        try:
            msg = teacher.invoke([SystemMessage(content="You revise answers to follow a rule."),
                                  HumanMessage(content=text)])
            out.append(clean_revision(msg.text if hasattr(msg, "text") else str(msg.content)))
        except Exception as exc:  # a remote LLM can fail in many ways; the record says which
            failures.append(SynthesisFailure(task="revision", ref=prompt, schema_name="text",
                                             errors=[f"{type(exc).__name__}: {exc}"[:500]]))
            out.append(None)
    return out


def already_follows(checks: Sequence[Check], baseline: str) -> bool:
    """Does the baseline already pass? Never for a check measured against the baseline itself
    (`length` without a value: a baseline is as long as itself, which says nothing)."""
    if any(c.metric == "length" and c.value is None for c in checks):
        return False
    return passes_all(checks, baseline, baseline)


def verify_revision_record(prompt: str, baseline: str, revision: str | None, f: dict, judge: BaseChatModel | None,
            cfg: SynthesisConfig, failures: list[SynthesisFailure]) -> RevisionRecord:
    checks = f["checks"]
    rec = dict(prompt=prompt, baseline=baseline, revision=revision)
    usable = revision is not None and not is_stub(revision, baseline, checks, f["effect"], cfg.min_revision_ratio)
    if checks:
        if cfg.skip_passing_baselines and already_follows(checks, baseline):
            return RevisionRecord(**rec, verdict="dropped", reason="the baseline already passes the checks")
        if usable:
            verdict, text = verify_revision(checks, revision, baseline)
            if verdict != "dropped" and text.strip() != baseline.strip():
                return RevisionRecord(**rec, verdict=verdict, chosen=text)
        # The revision is useless or beyond repair: the baseline, repaired, is a minimal edit
        # that follows the rule (for a start/end marker or forbidden strings).
        verdict, text = verify_revision(checks, baseline, baseline)
        if verdict == "repaired":
            why = "revision unusable" if not usable else "revision failed the checks"
            return RevisionRecord(**rec, verdict="baseline_repaired", chosen=text, reason=f"{why}; baseline repaired")
        reason = ("the baseline already passes the checks: no pair to learn from" if verdict == "kept"
                  else "revision and baseline fail a check that cannot be repaired")
        return RevisionRecord(**rec, verdict="dropped", reason=reason)
    if not usable:
        return RevisionRecord(**rec, verdict="dropped", reason="revision empty, unchanged or a stub")
    if judge is not None:
        try:
            j = ask_structured(judge, JUDGE_REVISION_PROMPT.format(rule=f["effect"] or f["text"], prompt=prompt,
                                                                   baseline=baseline, revision=revision),
                               RevisionJudgement, retries=cfg.retries)
        except StructuredFailure as exc:
            failures.append(SynthesisFailure.from_structured(exc, "judge_revision", prompt))
        else:
            if j.follows_rule and j.keeps_rest:
                return RevisionRecord(**rec, verdict="kept", chosen=revision, reason="teacher: follows the rule")
            return RevisionRecord(**rec, verdict="dropped",
                                  reason="teacher: " + ("does not follow the rule" if not j.follows_rule
                                                        else "loses the rest of the answer"))
    if cfg.keep_unverified:
        return RevisionRecord(**rec, verdict="unverified", chosen=revision,
                              reason="no checks and no capable teacher" if judge is None else "judge failed")
    return RevisionRecord(**rec, verdict="dropped", reason="could not be verified")
