"""Feedback: explicit records (thumbs, scores, reasons, comments, corrections), natural feedback found
in follow-up turns, and the LLM answers analysis could not parse.

Explicit feedback is keyed by a client-chosen id, so a retry never duplicates: `add` returns the
record already there. Natural feedback is written with the completion's `analysed` mark in one
transaction, so a restart neither repeats nor skips a turn.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Iterable

from service.store.db import Repository, new_id, where
from service.store.exchanges import NATURAL_DONE


class Feedback(Repository):
    def add(self, record: dict) -> tuple[dict, bool]:
        """Insert feedback; a record with the same id already there is returned as it is.

        Returns (record, created). Commits before returning.
        """
        existing = self.get(record["id"])
        if existing is not None:
            return existing, False
        try:
            with self.database.atomic():
                self.database.db["feedback"].insert(record)
        except sqlite3.IntegrityError:
            # A concurrent retry with the same id won the race: same id, same record.
            existing = self.get(record["id"])
            if existing is None:
                raise
            return existing, False
        return self.get(record["id"]), True

    def get(self, feedback_id: str) -> dict | None:
        return self.database.one("SELECT * FROM feedback WHERE id = ?", [feedback_id])

    def list(self, completion_id: str | None = None, conversation_id: str | None = None,
             since: float | None = None, limit: int = 100) -> list[dict]:
        sql, params = where([("completion_id = ?", completion_id), ("conversation_id = ?", conversation_id),
                             ("created >= ?", since)])
        return self.database.rows(f"SELECT * FROM feedback{sql} ORDER BY created DESC LIMIT ?", params + [limit])

    def delete(self, feedback_id: str) -> bool:
        with self.database.atomic():
            cur = self.database.execute("DELETE FROM feedback WHERE id = ?", [feedback_id])
        return cur.rowcount > 0

    def with_exchanges(self) -> Iterable[dict]:
        """Every feedback record joined with the prompt and answer it is about, oldest first."""
        yield from self.database.iter_rows(
            "SELECT f.*, c.messages AS messages, c.response AS response, c.status AS status, c.model AS model, "
            "c.adapter_version AS adapter_version FROM feedback f "
            "JOIN completions c ON c.id = f.completion_id ORDER BY f.created")

    def with_exchange(self, feedback_id: str) -> dict | None:
        """One feedback record with the request and answer it is about."""
        return self.database.one(
            "SELECT f.*, c.messages AS messages, c.response AS response FROM feedback f "
            "JOIN completions c ON c.id = f.completion_id WHERE f.id = ?", [feedback_id])

    def unread(self, limit: int = 100) -> list[dict]:
        """Feedback not yet read for principles, with its exchange, oldest first."""
        return self.database.rows(
            "SELECT f.*, c.messages AS messages, c.response AS response FROM feedback f "
            "JOIN completions c ON c.id = f.completion_id WHERE f.analysed = 0 ORDER BY f.created LIMIT ?", [limit])

    def mark_read(self, feedback_id: str) -> None:
        with self.database.atomic():
            self.database.execute("UPDATE feedback SET analysed = 1 WHERE id = ?", [feedback_id])


class NaturalFeedback(Repository):
    def record(self, follow_up_id: str, found: dict | None) -> None:
        """The verdict on a follow-up turn (None: no feedback in it); the turn is then done."""
        with self.database.atomic():
            if found:
                self.database.db["natural_feedback"].insert(found)
            self.database.execute("UPDATE completions SET analysed = analysed | ? WHERE id = ?",
                                  [NATURAL_DONE, follow_up_id])

    def in_conversation(self, conversation_id: str) -> list[dict]:
        return self.database.rows("SELECT * FROM natural_feedback WHERE conversation_id = ? ORDER BY created",
                                  [conversation_id])

    def with_exchange(self, natural_id: str) -> dict | None:
        """One natural-feedback record with the request and the answer it is about."""
        return self.database.one(
            "SELECT n.*, c.response AS response, c.messages AS messages FROM natural_feedback n "
            "JOIN completions c ON c.id = n.completion_id WHERE n.id = ?", [natural_id])

    def rules_not_proposed(self, limit: int = 100) -> list[dict]:
        """Turns that state a rule and have not been read for principles yet, with their exchange."""
        return self.database.rows(
            "SELECT n.*, c.messages AS messages, c.response AS response FROM natural_feedback n "
            "JOIN completions c ON c.id = n.completion_id WHERE n.principle = 1 AND n.proposed = 0 "
            "ORDER BY n.created LIMIT ?", [limit])

    def list(self, category: str | None = None, limit: int = 100) -> list[dict]:
        """Recent verdicts with the request they follow, newest first."""
        sql, params = where([("n.category = ?", category)])
        return self.database.rows(
            "SELECT n.*, c.messages AS messages, c.response AS response FROM natural_feedback n "
            f"JOIN completions c ON c.id = n.completion_id{sql} ORDER BY n.created DESC LIMIT ?", params + [limit])

    def of_follow_up(self, follow_up_id: str) -> dict | None:
        return self.database.one("SELECT * FROM natural_feedback WHERE follow_up_id = ?", [follow_up_id])

    def relabel(self, follow_up: dict, turn: int, text: str, label: dict, actor: str) -> dict | None:
        """An operator's label of a follow-up turn (the request `follow_up`, whose user turn
        `turn` reads `text`): kept in natural_labels, and the stored verdict made to say it (one
        is written when the analysis had found none). One transaction. Returns the verdict."""
        before = self.of_follow_up(follow_up["id"])
        with self.database.atomic():
            self.database.db["natural_labels"].upsert({
                "follow_up_id": follow_up["id"], "created": time.time(), "category": label["category"],
                "polarity": label["polarity"], "principle": int(label["principle"]), "actor": actor,
                "before": json.dumps(before, default=str) if before else None}, pk="follow_up_id")
            if before is not None:
                self.database.db["natural_feedback"].update(before["id"], {
                    "category": label["category"], "polarity": label["polarity"],
                    "principle": int(label["principle"]), "labelled_by": actor,
                    "span": None if label["category"] == "none" else (before["span"] or text)})
            elif label["category"] != "none" or label["principle"]:
                self.database.db["natural_feedback"].insert({
                    "id": new_id("nf-"), "created": time.time(), "completion_id": follow_up["parent_id"],
                    "follow_up_id": follow_up["id"], "conversation_id": follow_up["conversation_id"], "turn": turn,
                    "user_turn": text, "category": label["category"], "polarity": label["polarity"],
                    "span": None if label["category"] == "none" else text, "principle": int(label["principle"]),
                    "source": "operator", "confidence": 1.0, "labelled_by": actor})
        return self.of_follow_up(follow_up["id"])

    def labels(self) -> list[dict]:
        """Every operator label with the messages of the request it labels, oldest first."""
        return self.database.rows(
            "SELECT l.*, c.messages AS messages FROM natural_labels l "
            "JOIN completions c ON c.id = l.follow_up_id ORDER BY l.created")

    def labels_version(self) -> tuple:
        """Changes whenever an operator labels or relabels a turn."""
        return tuple(self.database.execute("SELECT COUNT(*), COALESCE(MAX(created), 0) FROM natural_labels").fetchone())

    def mark_proposed(self, natural_id: str) -> None:
        with self.database.atomic():
            self.database.execute("UPDATE natural_feedback SET proposed = 1 WHERE id = ?", [natural_id])


class LLMFailures(Repository):
    """Teacher answers that never parsed (or calls that failed): kept with their raw text."""

    def record(self, task: str, ref: str, schema: str, raw: list, errors: list) -> None:
        with self.database.atomic():
            self.database.db["llm_failures"].insert({"created": time.time(), "task": task, "ref": ref,
                                                     "schema": schema, "raw": json.dumps(raw),
                                                     "errors": json.dumps(errors)})

    def list(self, task: str | None = None, limit: int = 100) -> list[dict]:
        sql, params = "SELECT * FROM llm_failures", []
        if task:
            sql, params = sql + " WHERE task = ?", [task]
        return self.database.rows(sql + " ORDER BY id DESC LIMIT ?", params + [limit])

