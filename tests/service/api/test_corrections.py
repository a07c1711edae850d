"""Corrections over HTTP and the CLI: a correction posted with feedback is listed with its request and our
answer, an operator's rejection changes its status and is audited, and a bad request (an unknown
id, a status that is neither accepted nor rejected) is refused with nothing changed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

KEY = "corrections-admin"
ADMIN = {"Authorization": f"Bearer {KEY}", "X-Operator": "ana"}


@pytest.fixture()
def client(tiny_client, monkeypatch):
    """The tiny app with its operator endpoints open (the shared fixture sets no admin key)."""
    monkeypatch.setattr(tiny_client.app.state.settings, "admin_key", KEY)
    return tiny_client


def corrected(client, question: str, correction: str, **feedback) -> tuple[dict, dict]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi."}, {"role": "user", "content": question}]
    r = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    completion = r.json()
    r = client.post("/v1/feedback", json={"completion_id": completion["id"], "thumb": "down",
                                          "correction": correction, **feedback})
    assert r.status_code == 201, r.text
    return completion, r.json()


def listed(client, **params) -> list[dict]:
    r = client.get("/admin/corrections", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    return body["data"]


def audit(client, object_id: str) -> list[dict]:
    return client.get("/admin/audit", params={"object_id": object_id}, headers=ADMIN).json()["data"]


def test_list_then_reject_then_accept(client):
    completion, fb = corrected(client, "What is the capital of Australia?", "Canberra.", comment="not Sydney")
    # Feedback without a correction is no correction.
    assert client.post("/v1/feedback", json={"completion_id": completion["id"], "thumb": "up"}).status_code == 201

    [item] = listed(client)
    assert item == {"id": fb["id"], "created": fb["created"], "completion_id": completion["id"],
                    "request": "What is the capital of Australia?",
                    "response": completion["choices"][0]["message"]["content"], "correction": "Canberra.",
                    "comment": "not Sydney", "status": "accepted", "distilled_version": None,
                    "adapter_version": None}
    assert listed(client, status="rejected") == []

    r = client.put(f"/admin/corrections/{fb['id']}", json={"status": "rejected", "reason": "Sydney is right"},
                   headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {**item, "status": "rejected"}
    assert [c["id"] for c in listed(client, status="rejected")] == [fb["id"]]
    assert listed(client, status="accepted") == []
    assert client.app.state.store.corrections.trainable() == []
    [row] = audit(client, fb["id"])
    assert (row["action"], row["actor"], row["object_type"], row["reason"]) == ("reject", "ana", "correction",
                                                                               "Sydney is right")
    assert (row["before"], row["after"]) == ({"status": "accepted"}, {"status": "rejected"})

    # An actor named in the body is the one recorded.
    r = client.put(f"/admin/corrections/{fb['id']}", json={"status": "accepted", "actor": "bo"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    assert [(a["action"], a["actor"]) for a in audit(client, fb["id"])] == [("accept", "bo"), ("reject", "ana")]
    assert [c["id"] for c in client.app.state.store.corrections.trainable()] == [fb["id"]]


def test_unknown_id_and_bad_status_change_nothing(client):
    _, fb = corrected(client, "How many legs has a spider?", "Eight.")
    thumbs_only = client.post("/v1/feedback", json={"completion_id": fb["completion_id"], "thumb": "up"}).json()
    before = listed(client)

    for missing in ("fb-nope", thumbs_only["id"]):  # no such record; a record with no correction
        r = client.put(f"/admin/corrections/{missing}", json={"status": "rejected"}, headers=ADMIN)
        assert r.status_code == 404, r.text
        error = r.json()["error"]
        assert error["type"] == "not_found_error" and error["code"] == "not_found" and missing in error["message"]
        assert audit(client, missing) == []

    for body in ({"status": "ignored"}, {"status": "REJECTED"}, {}, {"status": "rejected", "surplus": 1}):
        r = client.put(f"/admin/corrections/{fb['id']}", json=body, headers=ADMIN)
        assert r.status_code == 400, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert client.get("/admin/corrections", params={"status": "pending"}, headers=ADMIN).status_code == 400

    assert listed(client) == before and before[0]["status"] == "accepted"
    assert audit(client, fb["id"]) == []


def test_corrections_need_the_admin_key(client):
    assert client.get("/admin/corrections").status_code == 401
    r = client.put("/admin/corrections/x", json={"status": "rejected"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_cli_lists_rejects_and_accepts(client, tmp_path):
    from service.cli import app

    _, fb = corrected(client, "What is the capital of Australia?", "Canberra.")
    runner, data = CliRunner(), ["--data-dir", str(tmp_path)]

    r = runner.invoke(app, ["corrections", "list", *data])
    assert r.exit_code == 0, r.output
    assert fb["id"] in r.output and "accepted" in r.output and "What is the capital of Australia? -> Canberra." in r.output
    r = runner.invoke(app, ["corrections", "reject", fb["id"], "--reason", "wrong", "--actor", "cli-op", *data])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    assert (shown["id"], shown["status"], shown["request"]) == (fb["id"], "rejected", "What is the capital of Australia?")
    assert [c["status"] for c in listed(client)] == ["rejected"]
    assert [(a["action"], a["actor"], a["reason"]) for a in audit(client, fb["id"])] == [("reject", "cli-op", "wrong")]
    r = runner.invoke(app, ["corrections", "list", "--status", "accepted", *data])
    assert r.exit_code == 0 and fb["id"] not in r.output
    r = runner.invoke(app, ["corrections", "list", "--status", "rejected", *data])
    assert r.exit_code == 0 and fb["id"] in r.output

    assert runner.invoke(app, ["corrections", "list", "--status", "pending", *data]).exit_code == 1
    missing = runner.invoke(app, ["corrections", "reject", "fb-nope", *data])
    assert missing.exit_code == 2 and "fb-nope" in missing.output
    assert runner.invoke(app, ["corrections", "accept", fb["id"], *data]).exit_code == 0
    assert [c["status"] for c in listed(client)] == ["accepted"]
    assert audit(client, fb["id"])[0]["action"] == "accept"
