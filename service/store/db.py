"""The database under the store: one SQLite file, a connection per thread, migrations, transactions.

WAL mode with synchronous=FULL: a write has reached the disk when its transaction commits, so
an HTTP handler that commits before answering never acknowledges data a crash can lose.
A sqlite3 connection belongs to the thread that opened it, so each thread gets its own.
Every SQL statement of the service lives in this package (sqlite-utils' way: small named
functions over a real database); the repositories beside this module group them by table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlite_utils


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


# Each migration runs once, in order, inside a transaction; PRAGMA user_version remembers how
# many have run. Append new ones; never edit one that has shipped.
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
    # 5: operators' labels of follow-up turns (they retrain the natural-feedback classifier)
    """
    CREATE TABLE natural_labels (
        follow_up_id TEXT PRIMARY KEY REFERENCES completions(id),
        created REAL NOT NULL,
        category TEXT NOT NULL,
        polarity TEXT NOT NULL,
        principle INTEGER NOT NULL,
        actor TEXT NOT NULL,
        before TEXT
    );
    ALTER TABLE natural_feedback ADD COLUMN labelled_by TEXT;
    """,
    # 6: corrections as training data: an operator may reject one; the version that learned it
    """
    ALTER TABLE feedback ADD COLUMN correction_status TEXT;
    ALTER TABLE feedback ADD COLUMN correction_distilled TEXT;
    """,
    # 7: complaints (a thumbs-down with a comment, a natural complaint) and the better answer
    # sampled for each (DRIFT): verified, then reviewed by an operator before it trains
    """
    CREATE TABLE refinements (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        completion_id TEXT NOT NULL REFERENCES completions(id),
        source TEXT NOT NULL,
        source_id TEXT NOT NULL,
        complaint TEXT NOT NULL,
        candidate TEXT,
        verified INTEGER NOT NULL DEFAULT 0,
        method TEXT,
        detail TEXT,
        status TEXT NOT NULL,
        edited_by TEXT,
        distilled_version TEXT,
        UNIQUE (source, source_id)
    );
    CREATE INDEX refinements_status ON refinements(status, created);
    """,
    # 8: whether the version's adapter answered, or the base weights because the request was
    # outside the version's scope (policies.adapter_scope); NULL for the base model
    """
    ALTER TABLE completions ADD COLUMN adapter_applied INTEGER;
    """,
]

def answered_by(table: str = "") -> str:
    """The select expression `answered_by`: the adapter whose weights wrote a completion's answer,
    NULL where the base weights did (no version, or a request outside the version's scope)."""
    t = f"{table}." if table else ""
    return f"CASE WHEN {t}adapter_applied = 0 THEN NULL ELSE {t}adapter_version END AS answered_by"


ANSWERED_BY = answered_by()

BLANK = "' ' || char(9) || char(10) || char(13)"  # what TRIM(x, BLANK) strips: a text of whitespace is none

JSON_COLUMNS = {"messages", "params", "metadata", "principles_applied", "checks", "evidence", "votes", "before",
                "after", "raw", "errors", "principle_ids", "result", "stats"}


def transcript_hash(messages: Iterable[dict]) -> str:
    """A key for a transcript: roles and texts only, so formatting differences do not matter."""
    canon = [[m["role"], m["content"]] for m in messages]
    return hashlib.sha256(json.dumps(canon, ensure_ascii=False).encode()).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def decode(row: dict | None) -> dict | None:
    """A row as Python values: JSON columns parsed."""
    if row is None:
        return None
    for key in JSON_COLUMNS & row.keys():
        if row[key] is not None:
            row[key] = json.loads(row[key])
    return row


def encode(row: dict) -> dict:
    """A row ready to insert: JSON columns serialised, private (underscore) keys left out."""
    out = {k: v for k, v in row.items() if not k.startswith("_")}
    for key in JSON_COLUMNS & out.keys():
        if out[key] is not None and not isinstance(out[key], str):
            out[key] = json.dumps(out[key], ensure_ascii=False, default=str)
    return out


def where(filters) -> tuple[str, list]:
    """(" WHERE a = ? AND b >= ?", params) for the (clause, value) pairs whose value is given."""
    given = [(clause, value) for clause, value in filters if value is not None and value != ""]
    if not given:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in given), [v for _, v in given]


class Database:
    """The SQLite file: a connection per thread (`db`), migrated on open."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.migrate()

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

    def atomic(self) -> contextlib.AbstractContextManager:
        """Several writes as one transaction (see `atomic`)."""
        return atomic(self.db)

    def one(self, sql: str, params: Iterable[Any] = ()) -> dict | None:
        rows = list(self.db.query(sql, list(params)))
        return decode(rows[0]) if rows else None

    def rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict]:
        return [decode(r) for r in self.db.query(sql, list(params))]

    def iter_rows(self, sql: str, params: Iterable[Any] = ()) -> Iterator[dict]:
        for r in self.db.query(sql, list(params)):
            yield decode(r)

    def execute(self, sql: str, params: Iterable[Any] = ()):
        return self.db.execute(sql, list(params))

    def count(self, table: str) -> int:
        return self.db[table].count


class Repository:
    """A group of named queries over one part of the schema."""

    def __init__(self, database: Database):
        self.database = database
