"""The store: migrations, connections per thread, conversation links, and writes as transactions."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from service.store import MIGRATIONS, Store, transcript_hash


def test_migrations_are_recorded_and_idempotent(tmp_path):
    path = tmp_path / "r.db"
    Store(path)
    Store(path)  # a second open runs nothing again
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"completions", "feedback", "conversations"} <= tables


def _record(cid, messages, conversation="conv-1"):
    return {"id": cid, "created": 1.0, "conversation_id": conversation, "parent_id": None, "messages": messages,
            "status": "running", "model": "m", "adapter_version": None, "params": {}, "stream": 0}


def test_find_parent_and_interrupted(tmp_path):
    store = Store(tmp_path / "r.db")
    msgs = [{"role": "user", "content": "q"}]
    store.exchanges.start(_record("c1", msgs))
    assert store.exchanges.find_parent(msgs + [{"role": "assistant", "content": "a"}, {"role": "user", "content": "n"}]) is None
    store.exchanges.finish("c1", response="a", finish_reason="stop", status="ok", prompt_tokens=1,
                            completion_tokens=1, latency_ms=1.0, ttft_ms=1.0)
    follow = msgs + [{"role": "assistant", "content": "a"}, {"role": "user", "content": "n"}]
    assert store.exchanges.find_parent(follow)["id"] == "c1"
    assert store.exchanges.get("c1")["transcript_hash"] == transcript_hash(follow[:2])
    # The same exchange served to someone else, in another conversation: each user's follow-up
    # links to their own; a conversation the client names is searched alone.
    store.exchanges.start({**_record("c3", msgs, conversation="conv-2"), "user": "bob", "created": 2.0})
    store.exchanges.finish("c3", response="a", finish_reason="stop", status="ok", prompt_tokens=1,
                            completion_tokens=1, latency_ms=1.0, ttft_ms=1.0)
    assert store.exchanges.find_parent(follow, user="bob")["id"] == "c3"
    assert store.exchanges.find_parent(follow)["id"] == "c1"  # the anonymous one, although c3 is newer
    assert store.exchanges.find_parent(follow, conversation_id="conv-1", user="bob")["id"] == "c1"
    assert store.exchanges.find_parent(follow, conversation_id="conv-9") is None
    assert store.exchanges.find_parent(follow, user="carol") is None
    store.exchanges.start(_record("c2", follow))
    assert store.exchanges.mark_interrupted() == 1
    assert store.exchanges.get("c2")["status"] == "aborted"


def test_store_connections_are_per_thread(tmp_path):
    store = Store(tmp_path / "r.db")
    seen = []
    t = threading.Thread(target=lambda: seen.append(store.db))
    t.start()
    t.join()
    assert seen[0] is not store.db


def test_a_completion_and_its_conversation_are_stored_together_or_not_at_all(tmp_path):
    """sqlite-utils commits each statement on its own unless a transaction is open: the store
    groups its writes with atomic(), so a failed insert leaves no half-written exchange."""
    store = Store(tmp_path / "r.db")
    store.exchanges.start(_record("c1", [{"role": "user", "content": "q"}], conversation="conv-a"))
    with pytest.raises(sqlite3.IntegrityError):  # same completion id again, in a new conversation
        store.exchanges.start(_record("c1", [{"role": "user", "content": "q"}], conversation="conv-b"))
    ids = [r["id"] for r in store.db.query("SELECT id FROM conversations ORDER BY id")]
    assert ids == ["conv-a"]


def test_answered_by_names_the_weights_that_wrote_an_answer(tmp_path):
    store = Store(tmp_path / "r.db")
    msgs = [{"role": "user", "content": "q"}]
    for cid, version, applied in (("base", None, None), ("inside", "refinery@v1", 1), ("outside", "refinery@v1", 0)):
        store.exchanges.start({**_record(cid, msgs), "adapter_version": version, "adapter_applied": applied})
        store.exchanges.finish(cid, response="a", finish_reason="stop", status="ok", prompt_tokens=1,
                                completion_tokens=1, latency_ms=1.0, ttft_ms=1.0)
    rows = {r["id"]: (r["adapter_version"], r["answered_by"]) for r in store.exchanges.answered_without_flr(10)}
    assert rows == {"base": (None, None), "inside": ("refinery@v1", "refinery@v1"), "outside": ("refinery@v1", None)}
