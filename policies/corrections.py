"""Corrections as refinements (ILF, "Training Language Models with Language Feedback", Scheurer et
al. 2023): the text side. Which corrections to learn, what a correction says that our answer did
not, and whether a later answer says it too.

A corrected answer is the cheapest refinement there is: the user wrote the better answer. Before
one becomes a preference pair (correction over our answer), it must be about a request (a user
turn), differ from our answer, and be the latest word on its request: corrections of one request
that say the same thing by meaning (encoder cosine of the requests) are merged, the latest kept.

What a correction teaches is measured by its key terms: the words of the correction that neither
our answer nor the request contains ("Canberra" in "No, the capital is Canberra", "9am" in "We
open at 9am on Saturdays"). An answer adopts the correction when it contains at least half of
them (all of them when there are one or two).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from policies.text import STOPWORDS, last_user_text, words

SAME_REQUEST = 0.92  # encoder cosine from which two requests ask the same thing
MAX_TERMS = 5


def key_terms(correction: str, answer: str, request: str) -> list[str]:
    """Words (lower case) the correction adds to the answer and the request, in order."""
    known = set(words(answer)) | set(words(request))
    out: list[str] = []
    for w in words(correction):
        if w in STOPWORDS or w in known or w in out or len(w) < 2 and not w.isdigit():
            continue
        out.append(w)
    return out[:MAX_TERMS]


def adopted(answer: str, terms: Sequence[str]) -> bool | None:
    """Does `answer` say what the correction said? None when the correction added no words."""
    if not terms:
        return None
    have = set(words(answer))
    hits = sum(t in have for t in terms)
    return hits >= (len(terms) if len(terms) <= 2 else (len(terms) + 1) // 2)


@dataclass
class Selection:
    """The corrections to learn (one per request) and what was left out, with why."""

    kept: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # {"id", "why"}

    def counts(self) -> dict:
        why: dict[str, int] = {}
        for d in self.dropped:
            why[d["why"]] = why.get(d["why"], 0) + 1
        return {"rows": len(self.kept) + len(self.dropped), "used": len(self.kept), "dropped": why}


def select(rows: Sequence[dict], embed: Callable[[str], np.ndarray] | None = None) -> Selection:
    """Corrections (store rows, oldest first: id, messages, response, correction) -> one per request.

    A row without a user request, or whose correction is our answer again, is dropped; of rows
    whose requests say the same (same text, or cosine >= SAME_REQUEST under `embed`), the latest
    is kept."""
    sel = Selection()
    latest: list[tuple[dict, str, np.ndarray | None]] = []
    for row in rows:
        request = last_user_text(row.get("messages") or [])
        correction = (row.get("correction") or "").strip()
        if not request.strip():
            sel.dropped.append({"id": row["id"], "why": "no user request to correct"})
            continue
        if correction == (row.get("response") or "").strip():
            sel.dropped.append({"id": row["id"], "why": "the correction is our answer again"})
            continue
        vec = embed(request) if embed is not None else None
        for i, (old, old_request, old_vec) in enumerate(latest):
            same = old_request.strip().lower() == request.strip().lower() or (
                vec is not None and old_vec is not None and float(vec @ old_vec) >= SAME_REQUEST)
            if same:
                sel.dropped.append({"id": old["id"], "why": f"a later correction of the same request ({row['id']})"})
                latest[i] = (row, request, vec)
                break
        else:
            latest.append((row, request, vec))
    sel.kept = [dict(row, request=request) for row, request, _ in latest]
    return sel
