"""Fast API tests on a tiny random model: shapes, streaming, conversations, feedback, errors."""

from __future__ import annotations

import json
import sqlite3


USER = [{"role": "user", "content": "What is the capital of Australia?"}]


def chat(client, messages=USER, **kw):
    r = client.post("/v1/chat/completions", json={"messages": messages, "temperature": 0, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def db_rows(client, sql, params=()):
    path = client.app.state.settings.db_path
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, params)]
    finally:
        con.close()


def test_completion_shape_and_stored_record(tiny_client):
    body = chat(tiny_client, max_tokens=5, user="u1", seed=3, metadata={"app": "demo"})
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == tiny_client.app.state.engine.model_id
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] <= 5

    [row] = db_rows(tiny_client, "SELECT * FROM completions WHERE id = ?", (body["id"],))
    assert row["response"] == choice["message"]["content"]
    assert row["status"] == "ok"
    assert row["finish_reason"] == choice["finish_reason"]
    assert json.loads(row["messages"]) == USER
    assert json.loads(row["params"])["max_tokens"] == 5
    assert json.loads(row["params"])["seed"] == 3
    assert row["user"] == "u1" and json.loads(row["metadata"]) == {"app": "demo"}
    assert row["prompt_tokens"] == usage["prompt_tokens"]
    assert row["completion_tokens"] == usage["completion_tokens"]
    assert row["latency_ms"] > 0 and row["adapter_version"] is None
    assert row["conversation_id"] == body["conversation_id"]


def test_max_completion_tokens_and_length_finish(tiny_client):
    body = chat(tiny_client, max_completion_tokens=3)
    # A random model rarely emits its end token within 3 tokens; either way the cap holds.
    assert body["usage"]["completion_tokens"] <= 3
    if body["usage"]["completion_tokens"] == 3:
        assert body["choices"][0]["finish_reason"] == "length"


def test_text_part_content_and_developer_role(tiny_client):
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
    ]
    body = chat(tiny_client, messages)
    [row] = db_rows(tiny_client, "SELECT messages FROM completions WHERE id = ?", (body["id"],))
    assert json.loads(row["messages"]) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]


def test_streaming_chunks(tiny_client):
    with tiny_client.stream(
        "POST", "/v1/chat/completions",
        json={"messages": USER, "stream": True, "max_tokens": 6, "temperature": 0,
              "stream_options": {"include_usage": True}},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-")
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] <= 6
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    [row] = db_rows(tiny_client, "SELECT response, status, stream FROM completions WHERE id = ?", (chunks[0]["id"],))
    assert row == {"response": text, "status": "ok", "stream": 1}


def test_streaming_without_usage_has_no_usage_chunk(tiny_client):
    with tiny_client.stream("POST", "/v1/chat/completions",
                            json={"messages": USER, "stream": True, "max_tokens": 3}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line and line != "data: [DONE]"]
    assert all(c["choices"] for c in chunks)
    assert "usage" not in chunks[0]


def test_follow_up_is_linked_to_the_answer_it_follows(tiny_client):
    first = chat(tiny_client)
    answer = first["choices"][0]["message"]["content"]
    follow = USER + [{"role": "assistant", "content": answer}, {"role": "user", "content": "No, it's Canberra."}]
    second = chat(tiny_client, follow)
    assert second["conversation_id"] == first["conversation_id"]
    [row] = db_rows(tiny_client, "SELECT parent_id, conversation_id FROM completions WHERE id = ?", (second["id"],))
    assert row["parent_id"] == first["id"]
    # An assistant turn we never produced starts a new conversation.
    other = USER + [{"role": "assistant", "content": "something else"}, {"role": "user", "content": "ok"}]
    third = chat(tiny_client, other)
    assert third["conversation_id"] != first["conversation_id"]


def test_explicit_conversation_id(tiny_client):
    a = chat(tiny_client, metadata={"conversation_id": "conv-mine"})
    assert a["conversation_id"] == "conv-mine"
    r = tiny_client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 2},
                         headers={"X-Conversation-Id": "conv-header"})
    assert r.json()["conversation_id"] == "conv-header"


def test_models_health_metrics(tiny_client):
    models = tiny_client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [tiny_client.app.state.engine.model_id]
    assert tiny_client.get("/health").json()["status"] == "ok"
    chat(tiny_client, max_tokens=2)
    text = tiny_client.get("/metrics").text
    assert 'refinery_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert "refinery_request_latency_seconds_bucket" in text
    assert 'refinery_tokens_total{kind="completion"}' in text


def test_unknown_model_is_404(tiny_client):
    r = tiny_client.post("/v1/chat/completions", json={"messages": USER, "model": "gpt-9"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_feedback_round_trip(tiny_client):
    c = chat(tiny_client, max_tokens=4)
    fb = {"completion_id": c["id"], "thumb": "down", "score": 2, "reason": "wrong",
          "comment": "Canberra, not Sydney", "correction": "The capital of Australia is Canberra.", "user": "u1"}
    r = tiny_client.post("/v1/feedback", json=fb)
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["object"] == "feedback" and rec["conversation_id"] == c["conversation_id"]
    assert {k: rec[k] for k in fb} == fb
    listed = tiny_client.get("/v1/feedback", params={"completion_id": c["id"]}).json()
    assert listed["object"] == "list" and [x["id"] for x in listed["data"]] == [rec["id"]]
    by_conv = tiny_client.get("/v1/feedback", params={"conversation_id": c["conversation_id"]}).json()
    assert [x["id"] for x in by_conv["data"]] == [rec["id"]]
    assert tiny_client.get("/v1/feedback", params={"since": rec["created"] + 10}).json()["data"] == []
    assert tiny_client.delete(f"/v1/feedback/{rec['id']}").json()["deleted"] is True
    assert tiny_client.get("/v1/feedback", params={"completion_id": c["id"]}).json()["data"] == []
    assert tiny_client.delete(f"/v1/feedback/{rec['id']}").status_code == 404


def test_feedback_client_id_is_idempotent(tiny_client):
    c = chat(tiny_client, max_tokens=2)
    body = {"completion_id": c["id"], "id": "fb-client-1", "thumb": "up"}
    first = tiny_client.post("/v1/feedback", json=body)
    again = tiny_client.post("/v1/feedback", json=body)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json() == again.json()
    assert len(db_rows(tiny_client, "SELECT * FROM feedback WHERE id = 'fb-client-1'")) == 1
    other = chat(tiny_client, max_tokens=2)
    clash = tiny_client.post("/v1/feedback", json={**body, "completion_id": other["id"]})
    assert clash.status_code == 409
    changed = tiny_client.post("/v1/feedback", json={**body, "thumb": "down", "correction": "Better."})
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_mismatch"
    assert db_rows(tiny_client, "SELECT thumb, correction FROM feedback WHERE id = 'fb-client-1'") == [
        {"thumb": "up", "correction": None}]  # the first record stands, unchanged


def test_feedback_metrics_counted(tiny_client):
    c = chat(tiny_client, max_tokens=2)
    tiny_client.post("/v1/feedback", json={"completion_id": c["id"], "thumb": "up", "comment": "nice"})
    text = tiny_client.get("/metrics").text
    assert 'refinery_feedback_total{kind="thumb_up"} 1.0' in text
    assert 'refinery_feedback_total{kind="comment"} 1.0' in text


def test_api_keys(tmp_path, tiny_model_dir, model_cache):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from tests.fixtures.app import wait_healthy

    settings = Settings(data_dir=tmp_path, model=str(tiny_model_dir), model_cache=model_cache, _env_file=None,
                        api_keys="k1, k2", admin_key="admin")
    with TestClient(create_app(settings)) as client:
        wait_healthy(client)
        body = {"messages": USER, "max_tokens": 2}
        missing = client.post("/v1/chat/completions", json=body)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        wrong = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        assert client.get("/v1/feedback").status_code == 401
        for key in ("k1", "k2", "admin"):
            ok = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        assert client.get("/health").status_code == 200  # health stays open for load balancers


def test_health_is_503_until_the_model_loads(tmp_path, model_cache):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(data_dir=tmp_path, model=str(tmp_path / "no-such-model"), model_cache=model_cache, _env_file=None)
    with TestClient(create_app(settings)) as client:
        import time

        for _ in range(100):
            body = client.get("/health").json()
            if body["status"] == "error":
                break
            time.sleep(0.05)
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "error"
        chat_r = client.post("/v1/chat/completions", json={"messages": USER})
        assert chat_r.status_code == 503 and chat_r.json()["error"]["code"] == "model_loading"


def test_preference_pairs_come_only_from_finished_answers():
    from service.learn.export import preference_pairs

    q = [{"role": "user", "content": "Capital of Australia?"}]

    def row(fid, response, status="ok", **kw):
        return {"feedback_id": fid, "messages": q, "response": response, "status": status,
                **{k: kw.get(k) for k in ("thumb", "correction")}}

    pairs = preference_pairs([
        row("f1", "Sydney.", correction="Canberra."),
        row("f2", "", status="error", correction="Canberra!"),        # failed: nothing to prefer over
        row("f3", "Canb", status="aborted", thumb="up"),             # cut off: not what the model says
        row("f4", "Canberra is the capital.", thumb="up"),
        row("f5", "Melbourne.", thumb="down"),
    ])
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("Canberra.", "Sydney."), ("Canberra is the capital.", "Melbourne.")]
