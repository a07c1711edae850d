"""Refinements over HTTP and the CLI: a better answer sampled for a complaint is listed with its
request, our answer and its verification; an operator accepts it (as sampled, or with an answer of
their own, recorded as their edit) or rejects it, each verdict audited; a bad request (an unknown
id, accepting an unverified answer with none of one's own, a blank answer) is refused with nothing
changed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

KEY = "refinements-admin"
ADMIN = {"Authorization": f"Bearer {KEY}", "X-Operator": "ana"}


@pytest.fixture()
def client(tiny_client, monkeypatch):
    """The tiny app with its operator endpoints open (the shared fixture sets no admin key)."""
    monkeypatch.setattr(tiny_client.app.state.settings, "admin_key", KEY)
    return tiny_client


def complained(client, question: str, comment: str, candidate: str | None, verified: bool = True,
               method: str | None = "checks", detail: str = "passes its checks") -> tuple[dict, dict]:
    """An answer with a thumbs-down and a comment (a complaint), and the refinement the analyst
    would store for it."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi."}, {"role": "user", "content": question}]
    r = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    completion = r.json()
    r = client.post("/v1/feedback", json={"completion_id": completion["id"], "thumb": "down", "comment": comment})
    assert r.status_code == 201, r.text
    refinements = client.app.state.store.refinements
    [complaint] = [c for c in refinements.complaints() if c["completion_id"] == completion["id"]]
    return completion, refinements.add(complaint, candidate, verified, method, detail)


def listed(client, **params) -> list[dict]:
    r = client.get("/admin/refinements", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    return body["data"]


def audit(client, object_id: str) -> list[dict]:
    return client.get("/admin/audit", params={"object_id": object_id}, headers=ADMIN).json()["data"]


def test_list_filter_and_accept_as_sampled(client):
    completion, ref = complained(client, "How do I reverse a list in Python?", "that is not an answer",
                                 "Use reversed(xs) or xs[::-1].")
    _, unverified = complained(client, "What is DNS?", "far too long", None, verified=False, method=None,
                               detail="no answer came")

    first, second = listed(client)
    assert (first["id"], second["id"]) == (unverified["id"], ref["id"])  # newest first
    assert second == {"id": ref["id"], "created": ref["created"], "completion_id": completion["id"],
                      "request": "How do I reverse a list in Python?",
                      "response": completion["choices"][0]["message"]["content"],
                      "complaint": "that is not an answer", "source": "feedback",
                      "candidate": "Use reversed(xs) or xs[::-1].", "verified": True, "method": "checks",
                      "detail": "passes its checks", "status": "proposed", "edited_by": None,
                      "distilled_version": None, "adapter_version": None}
    assert (first["status"], first["verified"], first["candidate"], first["method"]) == ("unverified", False, None, None)
    assert [r["id"] for r in listed(client, status="proposed")] == [ref["id"]]
    assert [r["id"] for r in listed(client, status="unverified")] == [unverified["id"]]
    assert listed(client, status="accepted") == [] and len(listed(client, limit=1)) == 1

    r = client.put(f"/admin/refinements/{ref['id']}", json={"status": "accepted", "reason": "right"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {**second, "status": "accepted"}  # as sampled: no edit
    assert [x["id"] for x in listed(client, status="accepted")] == [ref["id"]]
    assert [t["id"] for t in client.app.state.store.refinements.trainable()] == [ref["id"]]
    [row] = audit(client, ref["id"])
    assert (row["action"], row["actor"], row["object_type"], row["reason"]) == ("accept", "ana", "refinement", "right")
    assert row["before"] == {"status": "proposed", "candidate": "Use reversed(xs) or xs[::-1]."}
    assert row["after"] == {"status": "accepted", "candidate": "Use reversed(xs) or xs[::-1]."}


def test_accept_with_an_edited_answer_then_reject(client):
    _, ref = complained(client, "Capital of Australia?", "wrong city", "Sydney.")
    r = client.put(f"/admin/refinements/{ref['id']}",
                   json={"status": "accepted", "candidate": "  Canberra is the capital.  ", "actor": "bo"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    shown = r.json()
    assert (shown["status"], shown["candidate"], shown["edited_by"]) == ("accepted", "Canberra is the capital.", "bo")
    [trains] = client.app.state.store.refinements.trainable()
    assert trains["correction"] == "Canberra is the capital."
    [row] = audit(client, ref["id"])
    assert (row["action"], row["actor"]) == ("accept", "bo")
    assert (row["before"]["candidate"], row["after"]["candidate"]) == ("Sydney.", "Canberra is the capital.")

    r = client.put(f"/admin/refinements/{ref['id']}", json={"status": "rejected", "reason": "changed my mind"},
                   headers=ADMIN)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["candidate"]) == ("rejected", "Canberra is the capital.")
    assert client.app.state.store.refinements.trainable() == []
    assert [(a["action"], a["actor"], a["reason"]) for a in audit(client, ref["id"])] == [
        ("reject", "ana", "changed my mind"), ("accept", "bo", None)]


def test_unverified_needs_an_answer_and_bad_requests_change_nothing(client):
    _, ref = complained(client, "What is DNS?", "far too long", "DNS is " + "very " * 40, verified=False,
                        method="encoder", detail="no closer to the complaint than ours")
    before = listed(client)

    r = client.put(f"/admin/refinements/{ref['id']}", json={"status": "accepted"}, headers=ADMIN)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert "verification" in error["message"] and error["param"] == "candidate"

    for body in ({"status": "accepted", "candidate": "   "}, {"status": "accepted", "candidate": ""},
                 {"status": "ignored"}, {"status": "ACCEPTED"}, {}, {"status": "rejected", "surplus": 1}):
        r = client.put(f"/admin/refinements/{ref['id']}", json=body, headers=ADMIN)
        assert r.status_code == 400, (body, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert client.get("/admin/refinements", params={"status": "pending"}, headers=ADMIN).status_code == 400

    r = client.put("/admin/refinements/ref_nope", json={"status": "rejected"}, headers=ADMIN)
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["type"] == "not_found_error" and error["code"] == "not_found" and "ref_nope" in error["message"]
    assert audit(client, "ref_nope") == []

    assert listed(client) == before and before[0]["status"] == "unverified"
    assert audit(client, ref["id"]) == []

    # With the operator's own answer it is accepted, and the answer is theirs.
    r = client.put(f"/admin/refinements/{ref['id']}", json={"status": "accepted", "candidate": "DNS maps names to IPs."},
                   headers=ADMIN)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["candidate"], r.json()["edited_by"]) == ("accepted", "DNS maps names to IPs.", "ana")


def test_refinements_need_the_admin_key(client):
    assert client.get("/admin/refinements").status_code == 401
    r = client.put("/admin/refinements/x", json={"status": "rejected"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_cli_lists_accepts_and_rejects(client, tmp_path):
    from service.cli import app

    _, ref = complained(client, "Capital of Australia?", "wrong city", "Sydney.")
    _, unverified = complained(client, "What is DNS?", "far too long", None, verified=False, method=None, detail="")
    runner, data = CliRunner(), ["--data-dir", str(tmp_path)]

    r = runner.invoke(app, ["refinements", "list", *data])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith(unverified["id"]) and "unverified" in lines[0] and "What is DNS? -> -" in lines[0]
    assert lines[1].startswith(ref["id"]) and "proposed" in lines[1] and "checks" in lines[1]
    assert "Capital of Australia? -> Sydney." in lines[1]
    r = runner.invoke(app, ["refinements", "list", "--status", "unverified", *data])
    assert r.exit_code == 0 and unverified["id"] in r.output and ref["id"] not in r.output
    assert runner.invoke(app, ["refinements", "list", "--status", "pending", *data]).exit_code == 1

    # An unverified one needs an answer: the store's message, nothing changed.
    r = runner.invoke(app, ["refinements", "accept", unverified["id"], *data])
    assert r.exit_code == 1 and "verification" in r.output
    assert audit(client, unverified["id"]) == []
    answer = tmp_path / "answer.txt"
    answer.write_text("DNS maps names to addresses.\n", encoding="utf-8")
    r = runner.invoke(app, ["refinements", "accept", unverified["id"], "--answer-file", str(answer),
                            "--actor", "cli-op", *data])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    assert (shown["status"], shown["candidate"], shown["edited_by"], shown["request"]) == (
        "accepted", "DNS maps names to addresses.", "cli-op", "What is DNS?")
    assert "messages" not in shown

    r = runner.invoke(app, ["refinements", "accept", ref["id"], "--answer", "Canberra.", "--reason", "Sydney is wrong",
                            *data])
    assert r.exit_code == 0, r.output
    assert (json.loads(r.output)["candidate"], json.loads(r.output)["status"]) == ("Canberra.", "accepted")
    r = runner.invoke(app, ["refinements", "reject", ref["id"], "--reason", "no", "--actor", "cli-op", *data])
    assert r.exit_code == 0 and json.loads(r.output)["status"] == "rejected"
    assert [(a["action"], a["actor"], a["reason"]) for a in audit(client, ref["id"])][0] == ("reject", "cli-op", "no")
    assert audit(client, ref["id"])[1]["action"] == "accept" and audit(client, ref["id"])[1]["reason"] == "Sydney is wrong"

    assert runner.invoke(app, ["refinements", "accept", ref["id"], "--answer", "   ", *data]).exit_code == 1
    assert runner.invoke(app, ["refinements", "accept", ref["id"], "--answer", "a", "--answer-file", str(answer),
                               *data]).exit_code == 1
    missing = runner.invoke(app, ["refinements", "reject", "ref_nope", *data])
    assert missing.exit_code == 2 and "ref_nope" in missing.output
    assert [r["status"] for r in listed(client)] == ["accepted", "rejected"]
