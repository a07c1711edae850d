"""Off the request path: natural feedback in follow-up turns, follow-up likelihood of every
answer, principles proposed from verbal feedback, their votes, and better answers for complaints.

A background thread runs `Analyst.run_once` every few seconds (sooner when poked after a
completion or a feedback); a chat response never waits for it. Each step marks what it has
done in the store, so a restart neither repeats nor skips work.
"""

from __future__ import annotations

import logging
import threading
import time

from policies.natural import detect_turn
from policies.corpus import load_corpus
from policies.principles import (GLOBAL_DOMAIN, FeedbackInput, Principle, ProposalFailure, nearest, nearest_by_meaning,
                                 propose_principle, same_scope_by_meaning)
from policies.principles.rules import states_global
from policies.principles.icai import Pair, score_principle
from policies.scope import is_global, same_scope
from policies.teacher import is_capable
from policies.text import last_user_text, last_user_turn
from service.learn.complaints import ComplaintRefiner
from service.learn.export import feedback_rows, preference_pairs
from service.learn.natural import Classifiers, encoder_for
from service.learn.review import PrincipleBook
from service.serving.engines.base import Engine
from service.settings import Settings
from service.store import Store, new_id
from service.store.exchanges import NATURAL_DONE

log = logging.getLogger(__name__)


class Analyst:
    def __init__(self, settings: Settings, store: Store, engine: Engine, batch: int = 16):
        self.settings, self.store, self.engine, self.batch = settings, store, engine, batch
        self.book = PrincipleBook(store)
        self.teacher = settings.build_teacher(generate_fn=self._local_generate)
        self.classifiers = Classifiers(settings, store)
        self._encoder_cache = None
        self.complaints = ComplaintRefiner(store, engine, self.teacher, self._encoder, settings.complaint_max_tokens)
        self._poke = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._run_lock = threading.Lock()

    def _local_generate(self, messages: list[dict], max_tokens: int) -> str:
        return self.engine.generate_blocking(messages, max_tokens)

    # -- the background thread -----------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="refinery-analysis", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread:
            self._thread.join(30)

    def poke(self) -> None:
        self._poke.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._poke.wait(self.settings.analysis_interval_s)
            self._poke.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once()
            except Exception:
                log.exception("analysis pass failed")

    def run_once(self) -> dict[str, int]:
        """One pass over everything not yet analysed. Returns counts of what it did."""
        with self._run_lock:
            counts = {}
            # Each step on its own: one that fails (a teacher down, a bug) does not stop the others.
            for name, step in (("natural", self.detect_natural), ("flr", self.score_flr),
                               ("proposed", self.propose_from_feedback), ("voted", self.vote_new_principles),
                               ("refined", self.refine_complaints)):
                try:
                    counts[name] = step()
                except Exception:
                    log.exception("analysis step %s failed", name)
                    counts[name] = 0
            return counts

    # -- natural feedback ------------------------------------------------------------------
    def detect_natural(self) -> int:
        rows = self.store.exchanges.not_analysed(NATURAL_DONE, limit=200)
        found = 0
        for row in rows:
            try:
                record = self._natural_record(row)
            except Exception as exc:
                # A request of an odd shape (two user turns in a row, a system turn last...) or a
                # bug: recorded, and the row is not looked at again, so it cannot stall the rest.
                log.warning("natural feedback on %s failed: %s", row["id"], exc)
                self._record_failure("natural_feedback", row["id"], "NaturalFeedback", [], [f"{type(exc).__name__}: {exc}"])
                record = None
            self.store.natural.record(row["id"], record)
            found += bool(record)
        return found

    def _natural_record(self, row: dict) -> dict | None:
        """The natural-feedback record for a follow-up request, or None (no parent, no feedback)."""
        if not row["parent_id"]:
            return None
        messages = row["messages"]
        turn, text = last_user_turn(messages)
        parent = self.store.exchanges.get(row["parent_id"])
        flr = parent.get("flr") if parent is not None else None
        result = detect_turn(messages[: turn + 1], turn, llm=self.teacher, flr=flr,
                             classifier=None if is_capable(self.teacher) else self.classifiers.current())
        if getattr(result, "error", None):
            self._record_failure("natural_feedback", row["id"], "NaturalFeedback",
                                 getattr(result, "raw", None) or [], [result.error])
        if result.category == "none" and not result.principle:
            return None
        return {
            "id": new_id("nf-"), "created": time.time(), "completion_id": row["parent_id"],
            "follow_up_id": row["id"], "conversation_id": row["conversation_id"], "turn": turn,
            "user_turn": text, "category": result.category, "polarity": result.polarity,
            "span": result.span, "principle": int(bool(result.principle)), "source": result.source,
            "confidence": result.confidence, "error": getattr(result, "error", None),
        }

    # -- follow-up likelihood ----------------------------------------------------------------
    def score_flr(self) -> int:
        rows = self.store.exchanges.answered_without_flr(self.batch * 4)
        by_version: dict[str | None, list[dict]] = {}
        for r in rows:
            by_version.setdefault(r["answered_by"], []).append(r)  # the weights that wrote it
        done = 0
        for version, group in by_version.items():
            try:
                self.engine.acquire(version)  # held while its chunks run: no unload under them
            except KeyError:
                version = None  # unloaded since: the base model judges instead of failing
            try:
                done += self._score_group(version, group)
            finally:
                self.engine.release(version)
        return done

    def _score_group(self, version: str | None, group: list[dict]) -> int:
        # Small chunks, each run on the engine thread only while it has no request to serve
        # (background calls), as the version that answered: a request arriving meanwhile
        # waits for one chunk at most.
        step = max(1, min(self.batch, 2))
        for i in range(0, len(group), step):
            chunk = group[i:i + step]
            convs = [r["messages"] + [{"role": "assistant", "content": r["response"]}] for r in chunk]
            try:
                scores = self.engine.score_followups(convs, adapter=version).result(timeout=600)
            except Exception as exc:  # left without a score, not retried forever ahead of the rest
                log.warning("follow-up likelihood of %s failed: %s", [r["id"] for r in chunk], exc)
                scores = [None] * len(chunk)
            self.store.exchanges.set_flr({r["id"]: s for r, s in zip(chunk, scores)})
        return len(group)

    # -- complaints (DRIFT) ----------------------------------------------------------------
    def refine_complaints(self) -> int:
        """A better answer, verified, for a few complaints per pass (service.learn.complaints)."""
        return self.complaints.run(limit=4) if self.settings.refine_complaints else 0

    # -- principles ----------------------------------------------------------------------
    def _inputs(self) -> list[tuple[str, str, list[FeedbackInput]]]:
        """Verbal feedback not yet read: explicit comments and corrections, and natural
        feedback turns that state a standing rule."""
        out = []
        for r in self.store.feedback.unread(limit=100):
            prompt = last_user_text(r["messages"])
            positive = None if r["thumb"] is None else r["thumb"] == "up"
            items = []
            if r["comment"]:
                items.append(FeedbackInput(id=r["id"], kind="comment", text=r["comment"], prompt=prompt,
                                           answer=r["response"] or "", positive=positive))
            if r["correction"]:
                items.append(FeedbackInput(id=r["id"], kind="correction", text=r["correction"], prompt=prompt,
                                           answer=r["response"] or "", positive=positive))
            out.append(("feedback", r["id"], items))
        for r in self.store.natural.rules_not_proposed(limit=100):
            items = [FeedbackInput(id=r["id"], kind="natural_span", text=r["user_turn"],
                                   prompt=last_user_text(r["messages"]), answer=r["response"] or "")]
            out.append(("natural", r["id"], items))
        return out

    def propose_from_feedback(self) -> int:
        made = 0
        for kind, ref, items in self._inputs():
            for item in items:
                try:
                    proposal = propose_principle(item, self.teacher)
                except Exception as exc:  # e.g. a remote teacher down: recorded, not retried forever
                    log.warning("principle proposal from %s failed: %s", ref, exc)
                    self._record_failure("principle_proposal", ref, "Principle", [], [f"{type(exc).__name__}: {exc}"])
                    continue
                if isinstance(proposal, ProposalFailure):
                    self._record_failure(proposal.task, proposal.ref, proposal.schema_name, proposal.raw, proposal.errors)
                elif isinstance(proposal, Principle):
                    self._add(proposal, item)
                    made += 1
            if kind == "feedback":
                self.store.feedback.mark_read(ref)
            else:
                self.store.natural.mark_proposed(ref)
        return made

    def _encoder(self):
        """The sentence encoder, or None where it cannot load (then words decide, as before it)."""
        if self._encoder_cache is None:
            try:
                self._encoder_cache = encoder_for(self.settings)
            except Exception:
                log.exception("the sentence encoder did not load; principles are matched by their words")
                self._encoder_cache = False
        return self._encoder_cache or None

    def _scope_of_request(self, request: str) -> str | None:
        """The built-in corpus topic a request belongs to ("email to boss"), if the encoder is there."""
        encoder = self._encoder()
        if encoder is None or not request.strip():
            return None
        corpus = load_corpus(encoder)
        centroids = corpus.centroids()
        v = encoder.embed_one(request)
        topic = max(centroids, key=lambda t: float(centroids[t] @ v))
        return topic if float(centroids[topic] @ v) >= 0.3 else None

    def _add(self, proposal: Principle, item: FeedbackInput | None = None) -> None:
        """A new candidate, or more support for a near-duplicate one already there."""
        # A rule stated without a domain ("no emojis please") means requests like the one it was
        # said about, unless it says it means every request ("never use emojis").
        if (proposal.domain == GLOBAL_DOMAIN and proposal.proposer == "rules" and item is not None
                and item.kind != "correction" and not states_global(item.text)):
            topic = self._scope_of_request(item.prompt)
            if topic:
                proposal = proposal.model_copy(update={"domain": topic, "text": f"For {topic} requests: {proposal.text}"})
        encoder = self._encoder()
        # Only a principle for the same domain can take the evidence: "no emojis" for all requests
        # and "no emojis in my work emails" are two rules, however alike their words.
        def same(domain: str) -> bool:
            if same_scope(domain, proposal.domain):
                return True
            if encoder is None or is_global(domain) or is_global(proposal.domain):
                return False
            return same_scope_by_meaning(domain, proposal.domain, encoder)

        existing = [p for p in self.book.list(limit=1000) if p["status"] in ("candidate", "approved") and same(p["domain"])]
        evidence = [e.model_dump() for e in proposal.evidence]
        texts = [p["text"] for p in existing]
        match = nearest(proposal.text, texts) or (nearest_by_meaning(proposal.text, texts, encoder) if encoder else None)
        if match is not None:
            self.book.add_evidence(existing[match[0]]["id"], evidence)
            return
        self.book.create({
            "text": proposal.text, "domain": proposal.domain, "effect": proposal.effect, "source": proposal.source,
            "checks": list(proposal.checks), "evidence": evidence, "support": len(evidence),
            "proposer": proposal.proposer, "confidence": proposal.confidence,
            "mode": "prompt",
        })

    def vote_new_principles(self, max_pairs: int = 30) -> int:
        """ICAI voting on the store's preference pairs, when a capable teacher is configured."""
        if not is_capable(self.teacher):
            return 0
        pending = [p for p in self.book.list(status="candidate", limit=50) if p["votes"] is None]
        if not pending:
            return 0
        pairs = [Pair(prompt=last_user_text(p["prompt"]), chosen=p["chosen"][0]["content"],
                      rejected=p["rejected"][0]["content"])
                 for p in preference_pairs(feedback_rows(self.store))[:max_pairs]]
        if not pairs:
            return 0
        for p in pending:
            score = score_principle(p["text"], pairs, self.teacher)
            self.book.set_scores(p["id"], score, score["agreement"], score["relevance"])
        return len(pending)

    def record_failure(self, task: str, ref: str, raw: list, errors: list) -> None:
        """For other parts of the server (the scope check on the request path)."""
        self._record_failure(task, ref, "", raw, errors)

    def _record_failure(self, task: str, ref: str, schema: str, raw: list, errors: list) -> None:
        self.store.failures.record(task, ref, schema, raw, errors)
