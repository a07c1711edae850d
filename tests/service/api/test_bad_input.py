"""Every bad request gets its 4xx in OpenAI's error shape and leaves the database as it was."""

from __future__ import annotations

import sqlite3

import pytest

USER = [{"role": "user", "content": "hi"}]


def snapshot(client) -> dict:
    con = sqlite3.connect(client.app.state.settings.db_path)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}"))) for t in tables}
    finally:
        con.close()


@pytest.fixture()
def seeded(tiny_client):
    """A client whose store already holds one exchange and one feedback record."""
    r = tiny_client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 2})
    cid = r.json()["id"]
    tiny_client.post("/v1/feedback", json={"completion_id": cid, "thumb": "up", "id": "fb-1"})
    return tiny_client, cid


LONG = "x" * 40_000

CHAT_CASES = {
    "no messages": ({"messages": []}, 400, "messages"),
    "messages missing": ({"model": "x"}, 400, "messages"),
    "bad role": ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, None),
    "null content": ({"messages": [{"role": "user", "content": None}]}, 400, None),
    "no content": ({"messages": [{"role": "user"}]}, 400, None),  # was a 500 (found by schemathesis)
    "image part": ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, None),
    "no user turn": ({"messages": [{"role": "system", "content": "s"}]}, 400, "messages"),
    "n > 1": ({"messages": USER, "n": 2}, 400, "n"),
    "tools": ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
    "logprobs": ({"messages": USER, "logprobs": True}, 400, "logprobs"),
    "json mode": ({"messages": USER, "response_format": {"type": "json_object"}}, 400, "response_format"),
    "penalty": ({"messages": USER, "presence_penalty": 0.5}, 400, "presence_penalty"),
    "temperature too high": ({"messages": USER, "temperature": 3}, 400, "temperature"),
    "top_p zero": ({"messages": USER, "top_p": 0}, 400, "top_p"),
    "max_tokens zero": ({"messages": USER, "max_tokens": 0}, 400, "max_tokens"),
    "max_tokens over limit": ({"messages": USER, "max_tokens": 100_000}, 400, "max_tokens"),
    "max_completion_tokens over limit": ({"messages": USER, "max_completion_tokens": 100_000}, 400, "max_completion_tokens"),
    "too many stops": ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    "message too long": ({"messages": [{"role": "user", "content": LONG}]}, 400, "messages.0.content"),
    "too many messages": ({"messages": USER * 201}, 400, "messages"),
    "stream_options without stream": ({"messages": USER, "stream_options": {"include_usage": True}}, 400, "stream_options"),
    "unknown model": ({"messages": USER, "model": "nope"}, 404, "model"),
    "seed out of range": ({"messages": USER, "seed": 10**20}, 400, "seed"),
    "logit_bias": ({"messages": USER, "logit_bias": {"42": 5}}, 400, "logit_bias"),
    "function_call": ({"messages": USER, "functions": [{"name": "f"}], "function_call": "auto"}, 400, "functions"),
    "top_logprobs": ({"messages": USER, "top_logprobs": 3}, 400, "top_logprobs"),
    "conversation id too long": ({"messages": USER, "metadata": {"conversation_id": "c" * 200}}, 400,
                                 "metadata.conversation_id"),
}


@pytest.mark.parametrize("case", list(CHAT_CASES), ids=list(CHAT_CASES))
def test_bad_chat_request(seeded, case):
    client, _ = seeded
    body, status, param = CHAT_CASES[case]
    before = snapshot(client)
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param:
        assert err["param"] == param
    assert snapshot(client) == before


def test_context_overflow(seeded):
    client, _ = seeded
    before = snapshot(client)
    # Under the character limit but far over the context window in tokens.
    words = " ".join(["antidisestablishmentarianism"] * 800)
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": words}], "max_tokens": 8})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert snapshot(client) == before


def test_invalid_json_body(seeded):
    client, _ = seeded
    before = snapshot(client)
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert snapshot(client) == before


def test_body_too_large(seeded):
    client, _ = seeded
    before = snapshot(client)
    big = {"messages": [{"role": "user", "content": "y" * 1_100_000}]}
    r = client.post("/v1/chat/completions", json=big)
    assert r.status_code == 400 and r.json()["error"]["code"] == "body_too_large"
    assert snapshot(client) == before


def test_chunked_body_too_large(seeded):
    client, _ = seeded
    before = snapshot(client)

    def chunks():  # no Content-Length: the limit must hold on the bytes actually received
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(12):
            yield b"z" * 100_000
        yield b'"}]}'

    r = client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "body_too_large"
    assert snapshot(client) == before


FEEDBACK_CASES = {
    "nothing given": (lambda cid: {"completion_id": cid}, 400, None),
    "unknown completion": (lambda cid: {"completion_id": "chatcmpl-nope", "thumb": "up"}, 404, "completion_id"),
    "bad thumb": (lambda cid: {"completion_id": cid, "thumb": "sideways"}, 400, "thumb"),
    "score 0": (lambda cid: {"completion_id": cid, "score": 0}, 400, "score"),
    "score 6": (lambda cid: {"completion_id": cid, "score": 6}, 400, "score"),
    "comment too long": (lambda cid: {"completion_id": cid, "comment": "c" * 5000}, 400, "comment"),
    "correction too long": (lambda cid: {"completion_id": cid, "correction": "c" * 17000}, 400, "correction"),
    "unknown field": (lambda cid: {"completion_id": cid, "thumb": "up", "rating": 5}, 400, "rating"),
    "missing completion id": (lambda cid: {"thumb": "up"}, 400, "completion_id"),
}


@pytest.mark.parametrize("case", list(FEEDBACK_CASES), ids=list(FEEDBACK_CASES))
def test_bad_feedback(seeded, case):
    client, cid = seeded
    make, status, param = FEEDBACK_CASES[case]
    before = snapshot(client)
    r = client.post("/v1/feedback", json=make(cid))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if param:
        assert err["param"] == param
    assert snapshot(client) == before


def test_bad_feedback_queries(seeded):
    client, _ = seeded
    before = snapshot(client)
    assert client.get("/v1/feedback", params={"limit": 0}).status_code == 400
    assert client.get("/v1/feedback", params={"since": "yesterday"}).status_code == 400
    assert client.delete("/v1/feedback/fb-unknown").status_code == 404
    assert snapshot(client) == before
