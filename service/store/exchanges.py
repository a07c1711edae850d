"""Exchanges: conversations and completions (every request with its answer, version and timings).

A completion is stored as `running` before generation starts and finished after it, so a crash
leaves a record (`mark_interrupted` ends such records at the next start). Background analysis
marks what it has done per completion in the `analysed` bit field.
"""

from __future__ import annotations

import time

from service.store.db import ANSWERED_BY, Repository, encode, transcript_hash

NATURAL_DONE, FLR_DONE = 1, 2  # bits of completions.analysed


class Exchanges(Repository):
    def find_parent(self, messages: list[dict], conversation_id: str | None = None,
                    user: str | None = None) -> dict | None:
        """The completion whose transcript (its messages plus our answer) the request extends.

        Only the last assistant turn is looked up: that is the answer the new user turn
        follows. The parent is searched inside `conversation_id` when the client named one, and
        otherwise among the same `user`'s completions (two users who asked the same thing and
        got the same answer are not one conversation). Among identical transcripts the most
        recent wins.
        """
        for k in range(len(messages) - 1, -1, -1):
            if messages[k]["role"] == "assistant":
                h = transcript_hash(messages[: k + 1])
                if conversation_id is not None:
                    return self.database.one(
                        "SELECT * FROM completions WHERE transcript_hash = ? AND status = 'ok' AND conversation_id = ? "
                        "ORDER BY created DESC LIMIT 1", [h, conversation_id])
                return self.database.one(
                    "SELECT * FROM completions WHERE transcript_hash = ? AND status = 'ok' AND user IS ? "
                    "ORDER BY created DESC LIMIT 1", [h, user])
        return None

    def start(self, record: dict) -> None:
        """Stores a completion as `running` before generation starts, with its conversation."""
        db = self.database.db
        with self.database.atomic():
            db.execute("INSERT OR IGNORE INTO conversations (id, created, user) VALUES (?, ?, ?)",
                       [record["conversation_id"], record["created"], record.get("user")])
            db["completions"].insert(encode(record))

    def finish(self, completion_id: str, *, response: str, finish_reason: str | None, status: str,
               prompt_tokens: int | None, completion_tokens: int | None, latency_ms: float,
               ttft_ms: float | None, error: str | None = None) -> None:
        row = self.get(completion_id)
        thash = None
        if status == "ok":
            thash = transcript_hash(row["messages"] + [{"role": "assistant", "content": response}])
        with self.database.atomic():
            self.database.db["completions"].update(completion_id, {
                "finished": time.time(), "response": response, "finish_reason": finish_reason, "status": status,
                "error": error, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "latency_ms": latency_ms, "ttft_ms": ttft_ms, "transcript_hash": thash,
            })

    def get(self, completion_id: str) -> dict | None:
        return self.database.one("SELECT * FROM completions WHERE id = ?", [completion_id])

    def in_conversation(self, conversation_id: str) -> list[dict]:
        return self.database.rows("SELECT * FROM completions WHERE conversation_id = ? ORDER BY created",
                                  [conversation_id])

    def mark_interrupted(self) -> int:
        """At start-up: generations that were running when the process died never finished."""
        with self.database.atomic():
            cur = self.database.execute(
                "UPDATE completions SET status = 'aborted', error = 'server stopped during generation' "
                "WHERE status = 'running'")
        return cur.rowcount

    def recent_requests(self, limit: int = 2000) -> list[list[dict]]:
        """The messages of recent finished completions, newest first."""
        return [r["messages"] for r in self.database.rows(
            "SELECT messages FROM completions WHERE status = 'ok' ORDER BY created DESC LIMIT ?", [limit])]

    # -- background analysis -----------------------------------------------------------------
    def not_analysed(self, bit: int, limit: int = 200) -> list[dict]:
        """Finished (or ended) completions whose analysis step `bit` has not run, oldest first."""
        return self.database.rows(
            "SELECT * FROM completions WHERE analysed & ? = 0 AND status != 'running' ORDER BY created LIMIT ?",
            [bit, limit])

    def answered_without_flr(self, limit: int) -> list[dict]:
        """Answered completions not yet given a follow-up likelihood, oldest first; `answered_by`:
        the adapter whose weights wrote the answer (None: the base weights, also for a request
        outside its version's scope)."""
        return self.database.rows(
            f"SELECT id, messages, response, adapter_version, {ANSWERED_BY} FROM completions WHERE status = 'ok' "
            "AND analysed & ? = 0 ORDER BY created LIMIT ?", [FLR_DONE, limit])

    def set_flr(self, scores: dict[str, float | None]) -> None:
        """Record follow-up likelihoods (None: could not be scored) and mark them done."""
        with self.database.atomic():
            for completion_id, score in scores.items():
                self.database.execute("UPDATE completions SET flr = ?, analysed = analysed | ? WHERE id = ?",
                                      [score, FLR_DONE, completion_id])
