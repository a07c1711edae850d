"""Is a request inside a principle's domain? The request path's matcher, over a score in 0..1.

Unscoped prompting overgeneralises (C3PO): a rule about work emails must not reach a question
about chemistry. The score is, in the service, the principle's scope model on the sentence
encoder (policies.scope_model: "Why does the Moon have phases?" is astronomy without saying so);
without an encoder it is the lexical score here, pure string work: the domain's content words
are compared with the request's, the head word of the domain (its last content word: "work
*emails*", "*gardening*") counting double. A domain that means everywhere is always in scope,
without scoring. Only borderline cases go to a capable teacher, and its verdicts are cached.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import lru_cache

from pydantic import BaseModel

from policies.teacher import StructuredFailure, ask_structured, is_capable
from policies.text import last_user_text, topic_words

log = logging.getLogger(__name__)


@lru_cache(maxsize=4096)
def _domain_weights(domain: str) -> tuple[tuple[str, float], ...]:
    words = topic_words(domain)
    if not words:
        return ()
    # The head of the first noun phrase ("work emails" -> emails) carries the domain.
    first_phrase = re.split(r"[,;]| or | and ", domain.lower())[0]
    head = (topic_words(first_phrase) or words)[-1]
    weights: dict[str, float] = {}
    for w in words:
        weights[w] = max(weights.get(w, 0.0), 2.0 if w == head else 1.0)
    return tuple(weights.items())


# Domains that mean "everywhere" (policies.principles.GLOBAL_DOMAIN and how people write it).
GLOBAL_DOMAINS = {"all requests", "all", "everything", "every request", "any request", "all answers",
                  "all conversations", "general", "everywhere", "always"}


def is_global(domain: str) -> bool:
    return domain.strip().strip(".").lower() in GLOBAL_DOMAINS


def lexical_score(domain: str, text: str) -> float:
    """Share of the domain's (weighted) content words found in the text. 0..1; 1 for a global domain."""
    if is_global(domain):
        return 1.0
    weights = _domain_weights(domain)
    if not weights:
        return 0.0
    found = set(topic_words(text))
    total = sum(w for _, w in weights)
    return sum(w for word, w in weights if word in found) / total


def same_scope(a: str, b: str) -> bool:
    """Do two domains name the same scope? Both global, or the same content words."""
    if is_global(a) or is_global(b):
        return is_global(a) and is_global(b)
    wa, wb = {w for w, _ in _domain_weights(a)}, {w for w, _ in _domain_weights(b)}
    return bool(wa) and wa == wb


class ScopeVerdict(BaseModel):
    in_scope: bool


class ScopeMatcher:
    """Decides whether a request falls inside a principle's domain, on the request path.

    `scorer(domain, text)` gives the score (default: `lexical_score`; the service passes its scope
    models' probability, with `ask_band` around 0.5). The score decides alone outside `ask_band`
    or when no capable teacher is configured. Inside it, a capable teacher is asked, within
    `timeout_s`; a teacher that fails, times out or never answers in the schema leaves the
    score's verdict standing (the request never fails for it) and is reported to `on_failure`
    with its raw answers. Verdicts are cached (at most `cache_size` of them)."""

    def __init__(self, llm=None, threshold: float = 0.5, ask_band: tuple[float, float] = (0.01, 1.0),
                 timeout_s: float = 5.0, cache_size: int = 4096, on_failure=None, scorer=None):
        self.llm = llm if is_capable(llm) else None
        self.scorer = scorer or lexical_score
        self.threshold = threshold
        self.ask_band = ask_band
        self.timeout_s = timeout_s
        self.cache_size = cache_size
        self.on_failure = on_failure  # (task, ref, raw answers, errors) -> None
        self._cache: collections.OrderedDict[tuple[str, str], bool] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._pool = None

    def in_scope(self, domain: str, text: str) -> bool:
        if is_global(domain):
            return True
        score = self.scorer(domain, text)
        if self.llm is None or not (self.ask_band[0] <= score < self.ask_band[1]):
            return score >= self.threshold
        key = (domain, text[:2000])
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        verdict, settled = self._ask(domain, text, score)
        if settled:  # a fallback is not cached: the teacher gets another chance next time
            with self._lock:
                self._cache[key] = verdict
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return verdict

    def _ask(self, domain: str, text: str, score: float) -> tuple[bool, bool]:
        """(verdict, whether the teacher gave it)."""
        prompt = (
            "Decide whether a chat request falls inside a domain.\n"
            f"Domain: {domain}\nRequest: {text[:2000]}\n"
            'Answer with only JSON: {"in_scope": true} or {"in_scope": false}.'
        )
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="refinery-scope")
        future = self._pool.submit(ask_structured, self.llm, prompt, ScopeVerdict, retries=1)
        raw, errors = [], []
        try:
            return future.result(timeout=self.timeout_s).in_scope, True
        except StructuredFailure as failure:
            raw, errors = list(failure.raw), [str(failure)]
        except FutureTimeout:
            errors = [f"no answer within {self.timeout_s} s"]
        except Exception as exc:  # the teacher's own error (network, quota...)
            errors = [f"{type(exc).__name__}: {exc}"]
        log.warning("scope check for %r fell back to the score's verdict: %s", domain, errors[0])
        if self.on_failure is not None:
            try:
                self.on_failure("scope", domain, raw, errors)
            except Exception:
                log.exception("could not record a scope-check failure")
        return score >= self.threshold, False

    def applicable(self, principles: list[dict], messages: list[dict]) -> list[dict]:
        """The principles whose domain covers this request (judged on its last user turn)."""
        last_user = last_user_text(messages)
        return [p for p in principles if self.in_scope(p["domain"], last_user)]


def with_principles(messages: list[dict], principles: list[dict]) -> list[dict]:
    """The messages with the applicable rules added to the system prompt."""
    if not principles:
        return messages
    rules = "Follow these rules:\n" + "\n".join(f"- {p['text']}" for p in principles)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"].rstrip() + "\n\n" + rules}] + messages[1:]
    return [{"role": "system", "content": rules}] + messages
