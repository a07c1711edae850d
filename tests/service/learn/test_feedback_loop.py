"""Issue 3 end to end: a conversation whose last turn states a rule becomes natural feedback and a
candidate principle; once approved, it reaches in-domain requests and not the others."""

from __future__ import annotations

import json
import sqlite3

import pytest

ADMIN = {"Authorization": "Bearer adm"}


@pytest.fixture()
def client(tmp_path, tiny_model_dir, model_cache):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from tests.fixtures.app import wait_healthy

    settings = Settings(data_dir=tmp_path, model=str(tiny_model_dir), model_cache=model_cache, _env_file=None,
                        admin_key="adm", default_max_tokens=6, analysis_interval_s=3600)
    with TestClient(create_app(settings)) as c:
        wait_healthy(c)
        yield c


def rows(client, sql, params=()):
    con = sqlite3.connect(client.app.state.settings.db_path)
    con.row_factory = sqlite3.Row
    return [dict(r) for r in con.execute(sql, params)]


def chat(client, messages):
    r = client.post("/v1/chat/completions", json={"messages": messages, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()


def test_rule_in_conversation_becomes_a_scoped_principle(client):
    ask = [{"role": "user", "content": "Write a short email to my team about Friday's meeting."}]
    first = chat(client, ask)
    follow = ask + [{"role": "assistant", "content": first["choices"][0]["message"]["content"]},
                    {"role": "user", "content": "from now on, no emojis in my work emails please"}]
    second = chat(client, follow)
    assert second["conversation_id"] == first["conversation_id"]

    # The background thread may already be on it (it is poked after each exchange); this pass
    # waits for it and finishes whatever is left.
    assert client.post("/admin/analyse", headers=ADMIN).status_code == 200

    [nf] = rows(client, "SELECT * FROM natural_feedback WHERE completion_id = ?", (first["id"],))
    assert nf["follow_up_id"] == second["id"] and nf["principle"] == 1
    assert nf["span"] and nf["span"] in "from now on, no emojis in my work emails please"
    assert nf["polarity"] in ("negative", "neutral")
    flr = rows(client, "SELECT flr FROM completions WHERE id = ?", (first["id"],))[0]["flr"]
    assert isinstance(flr, float)

    queue = client.get("/admin/principles", params={"status": "candidate"}, headers=ADMIN).json()["data"]
    [p] = [p for p in queue if "emoji" in p["text"].lower()]
    assert "email" in p["domain"].lower()
    assert {"kind": "natural", "id": nf["id"]} in p["evidence"]
    detail = client.get(f"/admin/principles/{p['id']}", headers=ADMIN).json()
    assert detail["evidence_detail"][0]["conversation_id"] == first["conversation_id"]

    # A second pass does nothing new: work is marked done in the store.
    again = client.post("/admin/analyse", headers=ADMIN).json()
    assert again == {"natural": 0, "flr": 0, "proposed": 0, "voted": 0, "refined": 0}

    assert client.post(f"/admin/principles/{p['id']}/approve", headers=ADMIN).status_code == 200
    inside = chat(client, [{"role": "user", "content": "Draft an email to my manager asking for Monday off."}])
    outside = chat(client, [{"role": "user", "content": "What is the boiling point of water?"}])
    applied = {r["id"]: json.loads(r["principles_applied"]) for r in rows(
        client, "SELECT id, principles_applied FROM completions WHERE id IN (?, ?)", (inside["id"], outside["id"]))}
    assert applied[inside["id"]] == [p["id"]]
    assert applied[outside["id"]] == []


def test_comment_and_correction_become_candidates(client):
    c = chat(client, [{"role": "user", "content": "How do I water tomatoes?"}])
    client.post("/v1/feedback", json={"completion_id": c["id"], "thumb": "down",
                                      "comment": "When I ask about gardening, begin your answer with 'Green thumb:'"})
    client.post("/admin/analyse", headers=ADMIN)
    queue = client.get("/admin/principles", headers=ADMIN).json()["data"]
    [p] = [p for p in queue if "Green thumb" in p["text"]]
    assert p["checks"] == ['starts_with "Green thumb:"'] and "garden" in p["domain"].lower()
    # The same rule said again by someone else adds support instead of a duplicate.
    d = chat(client, [{"role": "user", "content": "When should I prune roses?"}])
    client.post("/v1/feedback", json={"completion_id": d["id"],
                                      "comment": "When I ask about gardening, start your answer with 'Green thumb:'"})
    client.post("/admin/analyse", headers=ADMIN)
    again = [x for x in client.get("/admin/principles", headers=ADMIN).json()["data"] if "Green thumb" in x["text"]]
    assert len(again) == 1 and again[0]["support"] == 2


def test_an_odd_request_does_not_stall_analysis(client):
    """Two user turns in a row after one of our answers: natural feedback cannot judge it. It is
    recorded as a failure and passed over; the turns after it are still analysed."""
    ask = [{"role": "user", "content": "What is the capital of Australia?"}]
    first = chat(client, ask)
    answered = ask + [{"role": "assistant", "content": first["choices"][0]["message"]["content"]}]
    odd = chat(client, answered + [{"role": "user", "content": "hm"}, {"role": "user", "content": "hello?"}])
    assert odd["conversation_id"] == first["conversation_id"]  # linked, so analysis looks at it
    good = chat(client, answered + [{"role": "user", "content": "No, it's Canberra."}])

    # The background thread may have done part of it already; this pass finishes the rest.
    assert client.post("/admin/analyse", headers=ADMIN).status_code == 200
    [nf] = rows(client, "SELECT * FROM natural_feedback")
    assert nf["follow_up_id"] == good["id"] and nf["category"] == "aware_with_correction"
    [failure] = rows(client, "SELECT * FROM llm_failures WHERE ref = ?", (odd["id"],))
    assert failure["task"] == "natural_feedback" and "ValueError" in failure["errors"]
    left = rows(client, "SELECT count(*) AS n FROM completions WHERE analysed & 1 = 0")[0]["n"]
    assert left == 0
    assert client.post("/admin/analyse", headers=ADMIN).json()["natural"] == 0
