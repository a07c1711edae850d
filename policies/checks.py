"""Programmatic checks: the metric vocabulary of C3PO's quantitative feedbacks, plus `max_words`
(an answer of at most N words: "keep answers about recipes under 100 words").

A check is `{metric, value}`; a principle keeps its checks in a compact text form
(`starts_with "Summary:"`, `contains_none_strings ["😀", "🎉"]`, `length`) that operators can
edit, parsed by `parse_check` and written by `format_check`.

Three uses: evaluating an answer (`run_check`, `passes_all`, and `compare_with_baseline` for
the `comparison` of a feedback over a set of answers), and verifying a C3PO revision
(`verify_revision`): a revision that fails is repaired where the check is constructive (a
missing prefix can be put first, forbidden strings can be removed) and dropped otherwise,
because an unverified "chosen" answer that ignores the feedback teaches the wrong thing.

Matching is case-insensitive except `regex_search_false` (case-sensitive, as the eval README
defines it). `starts_with`, `ends_with`, `doesnt_start_with` compare against the answer with
surrounding whitespace stripped.
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from statistics import mean
from typing import Any, Iterable, Literal, Sequence

from pydantic import BaseModel, model_validator

from policies.language import LANGUAGES, detect_language

Metric = Literal[
    "length", "contains_any_string", "contains_all_strings", "contains_none_strings", "starts_with",
    "ends_with", "ends_with_cleaned", "regex_search", "regex_search_false", "contains_phone_number",
    "is_language", "doesnt_start_with", "max_words",
]
METRICS: tuple[str, ...] = Metric.__args__  # type: ignore[attr-defined]
LIST_METRICS = {"contains_any_string", "contains_all_strings", "contains_none_strings"}
STRING_METRICS = {"starts_with", "ends_with", "ends_with_cleaned", "regex_search", "regex_search_false",
                  "is_language", "doesnt_start_with"}

Verdict = Literal["kept", "repaired", "dropped"]


class Check(BaseModel):
    """One programmatic check. `value` depends on the metric:

    - list of strings: contains_any_string / contains_all_strings / contains_none_strings
      (a single string is accepted and wrapped);
    - string: starts_with, ends_with, ends_with_cleaned, doesnt_start_with, regex_search,
      regex_search_false (a regular expression), is_language (ISO 639-1 code, see
      policies.language.LANGUAGES);
    - length: None (no longer than the baseline answer) or an int (at most that many characters);
    - contains_phone_number: None (any phone number) or the number that must appear.
    """

    metric: Metric
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_metric(self) -> "Check":
        m, v = self.metric, self.value
        if m in LIST_METRICS:
            if isinstance(v, str):
                self.value = v = [v]
            if not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v):
                raise ValueError(f"{m} needs a non-empty list of non-empty strings, got {v!r}")
        elif m in STRING_METRICS:
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"{m} needs a non-empty string, got {v!r}")
            if m.startswith("regex"):
                try:
                    re.compile(v)
                except re.error as exc:
                    raise ValueError(f"{m}: bad regular expression: {exc}") from exc
            if m == "is_language":
                self.value = v = v.strip().lower()
                if v not in LANGUAGES:
                    raise ValueError(f"is_language supports {', '.join(LANGUAGES)}; got {v!r}")
        elif m == "length":
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"length takes no value (compare with the baseline) or a positive int, got {v!r}")
        elif m == "max_words":
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"max_words needs a positive int, got {v!r}")
        elif m == "contains_phone_number":
            if v is not None and (not isinstance(v, str) or len(_digits(v)) < 5):
                raise ValueError(f"contains_phone_number takes no value or a phone number, got {v!r}")
        return self


# -- compact text form ------------------------------------------------------------------------

_HEAD = re.compile(r"\s*([a-z_]+)\s*[:=]?\s*(.*)\Z", re.S)


def parse_check(text: str | dict | Check) -> Check:
    """`starts_with "Summary:"` -> Check. Also accepts a dict or a Check (returned as is).

    The value is JSON; a Python literal (`['a', 'b']`) or a bare string (`starts_with Summary:`)
    is accepted too, because operators type these by hand. Raises ValueError when it does
    not parse.
    """
    if isinstance(text, Check):
        return text
    if isinstance(text, dict):
        return Check.model_validate(text)
    m = _HEAD.match(text or "")
    if not m:
        raise ValueError(f"a check looks like `metric value`, got {text!r}")
    metric, rest = m.group(1), m.group(2).strip()
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    value: Any = None
    if rest:
        # strict=False: a check typed with a real newline inside the quotes still parses.
        for loader in (json.JSONDecoder(strict=False).decode, ast.literal_eval):
            try:
                value = loader(rest)
                break
            except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                continue
        else:
            value = rest
            if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "\"'":
                value = rest[1:-1]
    return Check(metric=metric, value=value)


def format_check(check: Check | dict | str) -> str:
    """Check -> `starts_with "Summary:"`; `parse_check(format_check(c)) == c`."""
    check = parse_check(check)
    if check.value is None:
        return check.metric
    return f"{check.metric} {json.dumps(check.value, ensure_ascii=False)}"


def as_checks(checks: Iterable[Check | dict | str] | None) -> list[Check]:
    return [parse_check(c) for c in (checks or [])]


# -- running ---------------------------------------------------------------------------------

_PHONE = re.compile(r"(?<!\w)(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){1,3}(?!\w)")


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _clean(s: str) -> str:
    """ends_with_cleaned's normal form: lowercase, only [a-z0-9,.!?], whitespace folded."""
    return " ".join(re.sub(r"[^a-z0-9,.!?]", " ", s.lower()).split())


def _starts(text: str, marker: str) -> bool:
    t, v = text.strip().lower(), marker.lower().lstrip()
    core = v.rstrip()
    if core == v:
        return t.startswith(v)
    # A marker with trailing whitespace ("the ") is a whole word: "The cat" passes,
    # "Therefore" does not, and neither does an answer cut right after it.
    return t.startswith(core) and len(t) > len(core) and t[len(core)].isspace()


def run_check(check: Check | dict | str, text: str, baseline: str | None = None) -> bool:
    """Does `text` pass `check`? `baseline` (the base model's answer) is needed by `length`
    without a value; calling it without one raises ValueError rather than guessing."""
    check = parse_check(check)
    m, v = check.metric, check.value
    low = text.lower()
    if m == "length":
        if v is not None:
            return len(text) <= v
        if baseline is None:
            raise ValueError("the length check compares with the baseline answer; none was given")
        return len(text) <= len(baseline)
    if m == "contains_any_string":
        return any(s.lower() in low for s in v)
    if m == "contains_all_strings":
        return all(s.lower() in low for s in v)
    if m == "contains_none_strings":
        return not any(s.lower() in low for s in v)
    if m == "starts_with":
        return _starts(text, v)
    if m == "doesnt_start_with":
        return not _starts(text, v)
    if m == "ends_with":
        return low.strip().endswith(v.lower().strip())
    if m == "ends_with_cleaned":
        return _clean(text).endswith(_clean(v))
    if m == "regex_search":
        return re.search(v, text, re.I) is not None
    if m == "regex_search_false":
        return re.search(v, text) is None
    if m == "contains_phone_number":
        if v is None:
            return any(len(_digits(p)) >= 7 for p in _PHONE.findall(text))
        return _digits(v) in _digits(text)
    if m == "is_language":
        return detect_language(text) == v
    if m == "max_words":
        return len(text.split()) <= v
    raise ValueError(f"unknown metric {m!r}")  # unreachable: Check validates the metric


def passes_all(checks: Iterable[Check | dict | str], text: str, baseline: str | None = None) -> bool:
    return all(run_check(c, text, baseline) for c in as_checks(checks))


def compare_with_baseline(
    checks: Sequence[Check | dict | str],
    answers: Sequence[str],
    baselines: Sequence[str],
    comparison: Literal["at_least_baseline", "at_most_baseline"] = "at_least_baseline",
) -> dict:
    """A feedback's `comparison` over a set of answers; answers[i] and baselines[i] answer the
    same prompt.

    - at_least_baseline: the checks pass at least as often for the answers as for the baselines
      (`rate` >= `baseline_rate`).
    - at_most_baseline (with `length`): the answers are no longer than the baselines on average;
      `rate` is then the share of answers no longer than their own baseline.
    """
    if len(answers) != len(baselines):
        raise ValueError(f"{len(answers)} answers but {len(baselines)} baselines")
    checks = as_checks(checks)
    if not answers:
        return {"comparison": comparison, "n": 0, "rate": None, "baseline_rate": None, "passed": None}
    rate = mean(passes_all(checks, a, b) for a, b in zip(answers, baselines))
    out: dict[str, Any] = {"comparison": comparison, "n": len(answers), "rate": rate}
    if comparison == "at_most_baseline":
        out["mean_length"] = mean(len(a) for a in answers)
        out["baseline_mean_length"] = mean(len(b) for b in baselines)
        out["baseline_rate"] = 1.0  # a baseline is never longer than itself
        out["passed"] = out["mean_length"] <= out["baseline_mean_length"]
    elif comparison == "at_least_baseline":
        out["baseline_rate"] = mean(passes_all(checks, b, b) for b in baselines)
        out["passed"] = rate >= out["baseline_rate"]
    else:
        raise ValueError(f"unknown comparison {comparison!r}")
    return out


# -- repair ----------------------------------------------------------------------------------

def _is_emoji(s: str) -> bool:
    return bool(s) and all(unicodedata.category(c) in ("So", "Sk", "Mn", "Cf") for c in s.strip())


def _appendable(s: str) -> bool:
    """Is appending `s` to an answer a sensible fix? A word, a name, an emoji or a sign-off: yes.
    A lone symbol ("&", "#") or a section heading ("Background:") needs real rewriting: no."""
    core = s.strip()
    if not core or len(core) > 80:
        return False
    if _is_emoji(core):
        return True
    return any(c.isalnum() for c in core) and not core.endswith(":")


def _tidy(text: str) -> str:
    """Undo the damage of removing strings: orphaned emoji joiners, doubled spaces, a space
    left before punctuation, blank edges. Newlines are kept: they carry layout."""
    text = re.sub(r"(?<![^\s])[\ufe0f\u200d]+|[\ufe0f\u200d]+(?=\s|$)", "", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"[ \t]+([,.;:!?])", r"\1", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n[ \t]+", "\n", text)
    return text.strip()


def _remove(text: str, pattern: re.Pattern) -> str:
    # Replace with a space (never glue two words together), then tidy.
    for _ in range(5):  # removing can expose a new match ("a  and  and b"); a few rounds settle it
        new = pattern.sub(" ", text)
        if new == text:
            break
        text = new
    return _tidy(text)


def repair(check: Check | dict | str, text: str, baseline: str | None = None) -> str | None:
    """A version of `text` that passes `check`, or None when the check is not constructive
    (length, regex_search, is_language, phone numbers, headings or lone symbols to add)."""
    check = parse_check(check)
    if run_check(check, text, baseline):
        return text
    m, v = check.metric, check.value
    body = text.strip()
    out: str | None = None
    if m == "starts_with":
        marker = v.lstrip()
        sep = "" if marker[-1].isspace() else ("\n" if marker.startswith("```") else " ")
        out = marker + sep + body
    elif m in ("ends_with", "ends_with_cleaned"):
        marker = v.strip()
        if marker.startswith("```"):
            sep = "\n"
        elif "\n" in marker or len(marker) > 20:
            sep = "\n\n"  # a sign-off goes on its own paragraph
        elif not any(c.isalnum() for c in marker):
            sep = ""  # punctuation is attached: "Done" + "!"
        else:
            sep = " "
        out = body + sep + marker
    elif m == "doesnt_start_with":
        marker = v.strip().lower()
        out = body
        while out.lower().startswith(marker):
            out = out[len(marker):].lstrip(" \t\n,;:-–—")
        if out:
            out = out[0].upper() + out[1:]
    elif m == "contains_none_strings":
        out = _remove(text, re.compile("|".join(re.escape(s) for s in sorted(v, key=len, reverse=True)), re.I))
    elif m == "regex_search_false":
        out = _remove(text, re.compile(v))
    elif m == "max_words":
        # The first sentences that fit; a cut mid-sentence would teach broken answers.
        kept, count = [], 0
        for sentence in re.split(r"(?<=[.!?])\s+", body):
            n = len(sentence.split())
            if count + n > v:
                break
            kept.append(sentence)
            count += n
        out = " ".join(kept)
    elif m in ("contains_all_strings", "contains_any_string"):
        low = text.lower()
        missing = [s for s in v if s.lower() not in low]
        if m == "contains_any_string":
            missing = [next((s for s in v if _appendable(s)), v[0])]
        if not all(_appendable(s) for s in missing):
            return None
        out = body
        for s in missing:
            out = out.rstrip() + " " + s.strip()
    if not out or not out.strip():
        return None
    return out if run_check(check, out, baseline) else None


def verify_revision(
    checks: Sequence[Check | dict | str], revision: str, baseline: str | None = None
) -> tuple[Verdict, str | None]:
    """Keep a revision that passes every check, repair it where every failing check is
    constructive, drop it otherwise. Returns ("kept", revision), ("repaired", new text) or
    ("dropped", None). A `length` check needs the baseline answer."""
    checks = as_checks(checks)
    if passes_all(checks, revision, baseline):
        return "kept", revision
    text = revision
    # Repairs can undo each other (stripping a prefix, then removing a string); a few rounds
    # over all checks settle the cases that can be settled, the final test decides.
    for _ in range(3):
        for check in checks:
            if run_check(check, text, baseline):
                continue
            fixed = repair(check, text, baseline)
            if fixed is None:
                return "dropped", None
            text = fixed
        if passes_all(checks, text, baseline):
            return "repaired", text
    return "dropped", None
