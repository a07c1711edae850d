"""Text helpers every policy shares: words, content words, light stemming, the last user turn.

Two stop lists, because two questions are asked of a text: what is this turn about, compared with
the previous one (`STOPWORDS`: function words and chat filler), and which topic does a request or
a domain phrase name (`TOPIC_STOPWORDS`: also the words every request shares, such as "question",
"answer", "write", "help"). Matching runs on a copy with curly quotes made straight.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"'})
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")

STOPWORDS = frozenset("""
a an the and or but if then so of to in on at by for with from about into over under as is are was were be
been being am do does did doing have has had having i me my mine we our you your yours he she it its they them
their this that these those there here what which who whom whose when where why how can could would should will
shall may might must not no yes please just also too very really actually again still now then than some any
all each every more most much many few such own same other another one get got make tell give know want need
like ok okay hi hey thanks thank hmm well oh let s t d ll re ve m sorry wait um uh exactly
""".split())

TOPIC_STOPWORDS = frozenset("""
a an the and or of to in on at for with about from by as is are be been being it its this that these those
my me i you your we our they their he she his her them when whenever while if then than so not no do does
did can could would should will shall may might must any some all every each ask asks asking asked question
questions answer answers answering request requests user users writing write writes written help helping
something anything thing things stuff topic topics related regarding concerning like such via into up
""".split())


def straight_quotes(text: str) -> str:
    """Same length as `text` (offsets stay valid): curly quotes made straight."""
    return text.translate(_QUOTES)


def words(text: str) -> list[str]:
    """Lower-cased words (letters and digits, with inner hyphens and apostrophes)."""
    return _WORD.findall(straight_quotes(text).lower())


def plural(word: str) -> str:
    """A light plural and possessive strip: laptop's -> laptop, e-bikes -> e-bike, cities -> city."""
    w = word.removesuffix("'s")
    if len(w) > 3 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def stem(word: str) -> str:
    """A suffix stripper for topics: email/emails, garden/gardening, cook/cooking match."""
    w = word.lower()
    for suffix in ("ations", "ation", "ings", "ing", "ies", "es", "s", "ed", "ly"):
        if len(w) - len(suffix) >= 4 and w.endswith(suffix):
            w = w[: -len(suffix)]
            if suffix == "ies":
                w += "y"
            break
    return w


def content_words(text: str, stop: frozenset[str] = STOPWORDS, norm: Callable[[str], str] = plural,
                  min_length: int = 1) -> list[str]:
    """The words of `text` that carry its content, normalised by `norm`, in order.

    Defaults compare turns of a conversation; `topic_words` is the setting for topics."""
    out = []
    for w in words(text):
        if len(w) < min_length or w in stop:
            continue
        w = norm(w)
        if w not in stop:
            out.append(w)
    return out


def topic_words(text: str) -> list[str]:
    """Stemmed content words naming a topic ("drafting work emails" -> draft, work, email)."""
    return content_words(text, TOPIC_STOPWORDS, stem, min_length=3)


def message_text(message: dict) -> str:
    """A message's text; OpenAI content parts are joined (text parts only)."""
    content = message.get("content") or ""
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def last_user_turn(messages: Sequence[dict]) -> tuple[int, str]:
    """(index, text) of the last user message; (-1, "") when there is none."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i, message_text(messages[i])
    return -1, ""


def last_user_text(messages: Sequence[dict] | str) -> str:
    """The text of the last user message (a plain string is taken as that text)."""
    if isinstance(messages, str):
        return messages
    return last_user_turn(messages)[1]
