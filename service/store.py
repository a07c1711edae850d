"""The store: every exchange and every piece of feedback, in one SQLite file (sqlite-utils).

WAL mode with synchronous=FULL: a write has reached the disk when its transaction commits, so
an HTTP handler that commits before answering never acknowledges data a crash can lose.
A sqlite3 connection belongs to the thread that opened it, so each thread gets its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import sqlite_utils

# Each migration runs once, in order, inside a transaction; PRAGMA user_version remembers how
# many have run. Append new ones; never edit one that has shipped.
@contextlib.contextmanager
def atomic(db: sqlite_utils.Database):
    """Several writes as one transaction (sqlite-utils commits each statement on its own
    otherwise). BEGIN IMMEDIATE takes the write lock first, waiting up to the busy timeout, so a
    transaction that reads before it writes cannot fail half-way when another connection wrote
    in between (a deferred one would get SQLITE_BUSY at once). Nested blocks are savepoints."""
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


MIGRATIONS: list[str] = [
    # 1: exchanges, conversations, explicit feedback
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        user TEXT
    );
    CREATE TABLE completions (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        finished REAL,
        conversation_id TEXT NOT NULL REFERENCES conversations(id),
        parent_id TEXT REFERENCES completions(id),
        messages TEXT NOT NULL,
        response TEXT,
        finish_reason TEXT,
        status TEXT NOT NULL,
        error TEXT,
        model TEXT NOT NULL,
        adapter_version TEXT,
        params TEXT NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        latency_ms REAL,
        ttft_ms REAL,
        stream INTEGER NOT NULL DEFAULT 0,
        user TEXT,
        metadata TEXT,
        transcript_hash TEXT
    );
    CREATE INDEX completions_conversation ON completions(conversation_id, created);
    CREATE INDEX completions_parent ON completions(parent_id);
    CREATE INDEX completions_transcript ON completions(transcript_hash);
    CREATE TABLE feedback (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        completion_id TEXT NOT NULL REFERENCES completions(id),
        conversation_id TEXT NOT NULL,
        thumb TEXT,
        score INTEGER,
        reason TEXT,
        comment TEXT,
        correction TEXT,
        user TEXT
    );
    CREATE INDEX feedback_completion ON feedback(completion_id);
    CREATE INDEX feedback_conversation ON feedback(conversation_id, created);
    """,
    # 2: natural feedback, follow-up likelihood, principles and their review, LLM failures
    """
    ALTER TABLE completions ADD COLUMN flr REAL;
    ALTER TABLE completions ADD COLUMN principles_applied TEXT;
    ALTER TABLE completions ADD COLUMN analysed INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX completions_analysed ON completions(analysed, status);
    ALTER TABLE feedback ADD COLUMN analysed INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE natural_feedback (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        completion_id TEXT NOT NULL REFERENCES completions(id),
        follow_up_id TEXT NOT NULL REFERENCES completions(id),
        conversation_id TEXT NOT NULL,
        turn INTEGER NOT NULL,
        user_turn TEXT NOT NULL,
        category TEXT NOT NULL,
        polarity TEXT NOT NULL,
        span TEXT,
        principle INTEGER NOT NULL,
        source TEXT,
        confidence REAL,
        error TEXT
    );
    CREATE INDEX natural_completion ON natural_feedback(completion_id);
    CREATE TABLE principles (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        text TEXT NOT NULL,
        domain TEXT NOT NULL,
        effect TEXT NOT NULL,
        source TEXT NOT NULL,
        checks TEXT NOT NULL DEFAULT '[]',
        evidence TEXT NOT NULL DEFAULT '[]',
        support INTEGER NOT NULL DEFAULT 1,
        status TEXT NOT NULL DEFAULT 'candidate',
        mode TEXT NOT NULL DEFAULT 'prompt',
        proposer TEXT,
        confidence REAL,
        votes TEXT,
        agreement REAL,
        relevance REAL,
        reject_reason TEXT,
        merged_into TEXT
    );
    CREATE INDEX principles_status ON principles(status);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        object_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        before TEXT,
        after TEXT,
        reason TEXT
    );
    CREATE TABLE llm_failures (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created REAL NOT NULL,
        task TEXT NOT NULL,
        ref TEXT,
        schema TEXT,
        raw TEXT NOT NULL,
        errors TEXT
    );
    """,
    # 3: the refinement job queue and the data sets it made
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        principle_ids TEXT,
        params TEXT,
        requested_by TEXT,
        started REAL,
        finished REAL,
        heartbeat REAL,
        pid INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        stage TEXT,
        error TEXT,
        result TEXT
    );
    CREATE INDEX jobs_status ON jobs(status, created);
    CREATE TABLE datasets (
        hash TEXT PRIMARY KEY,
        created REAL NOT NULL,
        principle_id TEXT NOT NULL,
        job_id TEXT,
        stats TEXT,
        path TEXT
    );
    ALTER TABLE principles ADD COLUMN distilled_version TEXT;
    ALTER TABLE natural_feedback ADD COLUMN proposed INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: the machine a job's worker runs on (its pid means something only there)
    """
    ALTER TABLE jobs ADD COLUMN host TEXT;
    """,
]

JSON_COLUMNS = {"messages", "params", "metadata", "principles_applied", "checks", "evidence", "votes", "before", "after", "raw", "errors", "principle_ids", "result", "stats"}


def transcript_hash(messages: Iterable[dict]) -> str:
    """A key for a transcript: roles and texts only, so formatting differences do not matter."""
    canon = [[m["role"], m["content"]] for m in messages]
    return hashlib.sha256(json.dumps(canon, ensure_ascii=False).encode()).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.migrate()

    # -- connections -------------------------------------------------------------------
    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite_utils.Database(self.path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=10000")
            self._local.db = db
        return db

    def migrate(self) -> int:
        db = self.db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for i, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            with db.conn:
                db.conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version={i};\nCOMMIT;")
        return len(MIGRATIONS)

    def transaction(self):
        """Several writes as one transaction."""
        return atomic(self.db)

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _decode(row: dict | None) -> dict | None:
        if row is None:
            return None
        for key in JSON_COLUMNS & row.keys():
            if row[key] is not None:
                row[key] = json.loads(row[key])
        return row

    def _one(self, sql: str, params: Iterable[Any] = ()) -> dict | None:
        rows = list(self.db.query(sql, list(params)))
        return self._decode(rows[0]) if rows else None

    # -- completions ---------------------------------------------------------------------
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
                    return self._one(
                        "SELECT * FROM completions WHERE transcript_hash = ? AND status = 'ok' AND conversation_id = ? "
                        "ORDER BY created DESC LIMIT 1", [h, conversation_id])
                return self._one(
                    "SELECT * FROM completions WHERE transcript_hash = ? AND status = 'ok' AND user IS ? "
                    "ORDER BY created DESC LIMIT 1", [h, user])
        return None

    def start_completion(self, record: dict) -> None:
        """Stores a completion as `running` before generation starts, with its conversation."""
        db = self.db
        with atomic(db):
            conv = record["conversation_id"]
            db.execute(
                "INSERT OR IGNORE INTO conversations (id, created, user) VALUES (?, ?, ?)",
                [conv, record["created"], record.get("user")],
            )
            row = {k: v for k, v in record.items() if not k.startswith("_")}
            for key in JSON_COLUMNS & row.keys():
                row[key] = json.dumps(row[key], ensure_ascii=False)
            db["completions"].insert(row)

    def finish_completion(
        self,
        completion_id: str,
        *,
        response: str,
        finish_reason: str | None,
        status: str,
        prompt_tokens: int,
        completion_tokens: int,
        latency_ms: float,
        ttft_ms: float | None,
        error: str | None = None,
    ) -> None:
        db = self.db
        row = self.get_completion(completion_id)
        thash = None
        if status == "ok":
            thash = transcript_hash(row["messages"] + [{"role": "assistant", "content": response}])
        with atomic(db):
            db["completions"].update(
                completion_id,
                {
                    "finished": time.time(),
                    "response": response,
                    "finish_reason": finish_reason,
                    "status": status,
                    "error": error,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "latency_ms": latency_ms,
                    "ttft_ms": ttft_ms,
                    "transcript_hash": thash,
                },
            )

    def get_completion(self, completion_id: str) -> dict | None:
        return self._one("SELECT * FROM completions WHERE id = ?", [completion_id])

    def completions(self, conversation_id: str) -> list[dict]:
        return [self._decode(r) for r in self.db.query(
            "SELECT * FROM completions WHERE conversation_id = ? ORDER BY created", [conversation_id]
        )]

    def mark_interrupted(self) -> int:
        """At start-up: generations that were running when the process died never finished."""
        with atomic(self.db):
            cur = self.db.execute(
                "UPDATE completions SET status = 'aborted', error = 'server stopped during generation' "
                "WHERE status = 'running'"
            )
        return cur.rowcount

    # -- feedback ------------------------------------------------------------------------
    def add_feedback(self, record: dict) -> tuple[dict, bool]:
        """Insert feedback; a record with the same id already there is returned as it is.

        Returns (record, created). Commits before returning.
        """
        existing = self.get_feedback(record["id"])
        if existing is not None:
            return existing, False
        try:
            with atomic(self.db):
                self.db["feedback"].insert(record)
        except sqlite3.IntegrityError:
            # A concurrent retry with the same id won the race: same id, same record.
            existing = self.get_feedback(record["id"])
            if existing is None:
                raise
            return existing, False
        return self.get_feedback(record["id"]), True

    def get_feedback(self, feedback_id: str) -> dict | None:
        return self._one("SELECT * FROM feedback WHERE id = ?", [feedback_id])

    def list_feedback(
        self,
        completion_id: str | None = None,
        conversation_id: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[dict]:
        where, params = [], []
        for clause, value in (
            ("completion_id = ?", completion_id),
            ("conversation_id = ?", conversation_id),
            ("created >= ?", since),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT * FROM feedback"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC LIMIT ?"
        return list(self.db.query(sql, params + [limit]))

    def delete_feedback(self, feedback_id: str) -> bool:
        with atomic(self.db):
            cur = self.db.execute("DELETE FROM feedback WHERE id = ?", [feedback_id])
        return cur.rowcount > 0

    def feedback_with_exchanges(self) -> Iterable[dict]:
        """Every feedback record joined with the prompt and answer it is about, oldest first."""
        sql = (
            "SELECT f.*, c.messages AS messages, c.response AS response, c.status AS status, c.model AS model, "
            "c.adapter_version AS adapter_version FROM feedback f "
            "JOIN completions c ON c.id = f.completion_id ORDER BY f.created"
        )
        for row in self.db.query(sql):
            yield self._decode(row)

    def count(self, table: str) -> int:
        return self.db[table].count
