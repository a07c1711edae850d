"""The built-in general pool: everyday requests over many topics, each tagged with its topic.

It tops up the out-of-scope set of C3PO synthesis when logged traffic is thin. The topic tag lets
the caller drop a whole topic that overlaps the principle's domain ("How long do I boil an egg?"
never says "cooking", but its tag does). The prompts live in data/general_pool.json.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

POOL_TEXT: dict[str, list[str]] = json.loads((DATA / "general_pool.json").read_text(encoding="utf-8"))
# (topic, prompt) pairs; the order is fixed so a seeded sample is reproducible.
GENERAL_POOL: list[tuple[str, str]] = [(topic, p) for topic, prompts in POOL_TEXT.items() for p in prompts]


def pool_prompts(exclude_topics=(), exclude=None) -> list[tuple[str, str]]:
    """The pool without the given topics and without prompts for which `exclude(prompt)` is true."""
    banned = {t.lower() for t in exclude_topics}
    return [(t, p) for t, p in GENERAL_POOL if t not in banned and not (exclude and exclude(p))]
