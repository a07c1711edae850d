"""End to end: a real `refinery serve` (uvicorn) with the embedded model on a loopback port,
driven by the official openai client and LangChain's ChatOpenAI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

CAPITAL = [{"role": "user", "content": "What is the capital of Australia?"}]


@pytest.fixture(scope="module")
def client(live_server):
    from openai import OpenAI

    return OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)


def db(live_server):
    con = sqlite3.connect(live_server.data_dir / "refinery.db")
    con.row_factory = sqlite3.Row
    return con


def test_openai_client_plain(client, live_server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["SmolLM2-135M-Instruct"]
    r = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=CAPITAL, temperature=0, max_tokens=30)
    assert r.id.startswith("chatcmpl-")
    assert "Canberra" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens > 0
    row = db(live_server).execute("SELECT response, status FROM completions WHERE id = ?", (r.id,)).fetchone()
    assert row["response"] == r.choices[0].message.content and row["status"] == "ok"


def test_openai_client_streaming_first_token_before_the_end(client):
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Write a short poem about the sea."}],
        temperature=0, max_tokens=60, stream=True, stream_options={"include_usage": True},
    )
    first = None
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if delta.content:
            first = first or time.perf_counter()
            pieces.append(delta.content)
        finish = chunk.choices[0].finish_reason or finish
    ended = time.perf_counter()
    assert len(pieces) > 10  # token by token, not one blob
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens >= len(pieces) - 1
    # The first token arrived well before generation ended.
    assert first - started < 0.5 * (ended - started)


def test_langchain_chat_openai_invoke_and_stream(live_server):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=live_server.url + "/v1", api_key="unused", model="SmolLM2-135M-Instruct",
                     temperature=0, max_tokens=30, max_retries=0)
    answer = llm.invoke("What is the capital of Australia?")
    assert "Canberra" in answer.content
    assert answer.response_metadata.get("id", "").startswith("chatcmpl-") or answer.id
    chunks = list(llm.stream("What is the capital of Australia?"))
    assert len(chunks) > 2
    assert "Canberra" in "".join(c.content for c in chunks)


def test_client_disconnect_stops_generation(live_server):
    body = {"messages": [{"role": "user", "content": "Tell me a very long story about dragons."}],
            "max_tokens": 1000, "temperature": 0, "stream": True}
    with httpx.stream("POST", live_server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: {"):
                completion_id = json.loads(line[6:])["id"]
                seen += 1
            if seen >= 5:
                break
    # The server notices, stops decoding, and stores what it made as aborted.
    deadline = time.time() + 30
    row = None
    while time.time() < deadline:
        row = db(live_server).execute("SELECT * FROM completions WHERE id = ?", (completion_id,)).fetchone()
        if row["status"] != "running":
            break
        time.sleep(0.2)
    assert row["status"] == "aborted"
    assert 0 < len(row["response"]) and row["error"] == "client disconnected"
    # The next request is served promptly: the abandoned one no longer holds the model.
    t = time.perf_counter()
    r = httpx.post(live_server.url + "/v1/chat/completions",
                   json={"messages": CAPITAL, "max_tokens": 5, "temperature": 0}, timeout=60)
    assert r.status_code == 200 and time.perf_counter() - t < 20


def test_a_plain_request_whose_client_leaves_stops_generation(live_server):
    """Not streaming: the client gives up (its timeout) long before 1000 tokens; the server
    notices, stops decoding and stores the exchange as aborted."""
    prompt = "Write a very long story about a lighthouse keeper, chapter by chapter."
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 1000, "temperature": 0}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=2.0)
    deadline = time.time() + 30
    while True:
        row = db(live_server).execute("SELECT * FROM completions WHERE messages LIKE ? ORDER BY created DESC",
                                      (f"%{prompt}%",)).fetchone()
        if row is not None and row["status"] != "running":
            break
        assert time.time() < deadline, "still generating for a client that had gone"
        time.sleep(0.2)
    assert (row["status"], row["error"]) == ("aborted", "client disconnected")
    assert row["latency_ms"] < 15_000  # stopped soon after the client left, not at 1000 tokens


def test_feedback_round_trip_and_export(live_server, tmp_path):
    url = live_server.url
    post = lambda body: httpx.post(url + "/v1/chat/completions", json=body, timeout=120).json()
    corrected = post({"messages": [{"role": "user", "content": "Which planet is largest?"}], "max_tokens": 20, "temperature": 0})
    fb = httpx.post(url + "/v1/feedback", json={
        "completion_id": corrected["id"], "thumb": "down", "reason": "incorrect",
        "comment": "Jupiter is the largest", "correction": "Jupiter is the largest planet."}).json()
    assert fb["conversation_id"] == corrected["conversation_id"]

    prompt = [{"role": "user", "content": "Give me a name for a cat."}]
    a = post({"messages": prompt, "max_tokens": 12, "temperature": 1.0, "seed": 1})
    b = post({"messages": prompt, "max_tokens": 12, "temperature": 1.0, "seed": 2})
    assert a["choices"][0]["message"]["content"] != b["choices"][0]["message"]["content"]
    httpx.post(url + "/v1/feedback", json={"completion_id": a["id"], "thumb": "up"}).raise_for_status()
    httpx.post(url + "/v1/feedback", json={"completion_id": b["id"], "thumb": "down"}).raise_for_status()
    listed = httpx.get(url + "/v1/feedback", params={"completion_id": corrected["id"]}).json()["data"]
    assert [x["id"] for x in listed] == [fb["id"]]

    out = tmp_path / "export"
    env = dict(os.environ, REFINERY_DATA_DIR=str(live_server.data_dir))
    done = subprocess.run([sys.executable, "-m", "service.cli", "export", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    feedback = [json.loads(line) for line in (out / "feedback.jsonl").read_text().splitlines()]
    mine = {f["feedback_id"]: f for f in feedback}
    assert mine[fb["id"]]["response"] == corrected["choices"][0]["message"]["content"]
    assert mine[fb["id"]]["messages"][-1]["content"] == "Which planet is largest?"
    pairs = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    correction_pair = next(p for p in pairs if p["source"] == "correction")
    assert correction_pair["chosen"] == [{"role": "assistant", "content": "Jupiter is the largest planet."}]
    assert correction_pair["rejected"][0]["content"] == corrected["choices"][0]["message"]["content"]
    thumbs_pair = next(p for p in pairs if p["source"] == "thumbs")
    assert thumbs_pair["prompt"] == prompt
    assert thumbs_pair["chosen"][0]["content"] == a["choices"][0]["message"]["content"]
    assert thumbs_pair["rejected"][0]["content"] == b["choices"][0]["message"]["content"]


def test_feedback_survives_sigkill(tmp_path, model_cache, embedded_model_dir):
    from tests.fixtures.server import LiveServer

    server = LiveServer(tmp_path, model_cache).start()
    try:
        r = httpx.post(server.url + "/v1/chat/completions",
                       json={"messages": CAPITAL, "max_tokens": 8, "temperature": 0}, timeout=120).json()
        fb = httpx.post(server.url + "/v1/feedback", json={
            "completion_id": r["id"], "id": "fb-durable", "thumb": "up", "comment": "great"}, timeout=30)
        assert fb.status_code == 201
        server.kill()  # right after the 2xx: no graceful shutdown
        server.start()
        got = httpx.get(server.url + "/v1/feedback", params={"completion_id": r["id"]}, timeout=30).json()["data"]
        assert [(x["id"], x["thumb"], x["comment"]) for x in got] == [("fb-durable", "up", "great")]
        row = sqlite3.connect(tmp_path / "refinery.db").execute(
            "SELECT status, response FROM completions WHERE id = ?", (r["id"],)).fetchone()
        assert row[0] == "ok" and row[1] == r["choices"][0]["message"]["content"]
    finally:
        server.stop()
