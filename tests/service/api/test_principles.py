"""Operator review over HTTP and the CLI, and scoped in-context application of approved principles."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture()
def client(tmp_path, tiny_model_dir, model_cache):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from tests.fixtures.app import wait_healthy

    settings = Settings(data_dir=tmp_path, model=str(tiny_model_dir), model_cache=model_cache, _env_file=None,
                        admin_key="admin-key", default_max_tokens=4)
    with TestClient(create_app(settings)) as c:
        wait_healthy(c)
        yield c


def book(client):
    from service.learn.review import PrincipleBook

    return PrincipleBook(client.app.state.store)


def seed(client, **fields):
    base = {"text": "Do not use emojis in work emails", "domain": "work emails", "effect": "no emojis",
            "source": "critique"}
    return book(client).create({**base, **fields})


def test_admin_endpoints_need_the_admin_key(client):
    assert client.get("/admin/principles").status_code == 401
    assert client.get("/admin/principles", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/admin/principles", headers=ADMIN).status_code == 200


def test_admin_endpoints_closed_without_a_configured_key(tiny_client):
    r = tiny_client.get("/admin/principles", headers=ADMIN)
    assert r.status_code == 401 and r.json()["error"]["code"] == "admin_disabled"


def test_list_filters_show_approve_edit_reject_merge(client):
    a = seed(client)
    b = seed(client, text="Avoid emojis in emails to colleagues", support=3)
    c = seed(client, text="Answer in French", domain="French lessons", effect="French")
    listed = client.get("/admin/principles", params={"status": "candidate"}, headers=ADMIN).json()["data"]
    assert {p["id"] for p in listed} == {a["id"], b["id"], c["id"]}
    assert listed[0]["id"] == b["id"]  # most supported first
    assert [p["id"] for p in client.get("/admin/principles", params={"min_support": 2}, headers=ADMIN).json()["data"]] == [b["id"]]
    # Beyond SQLite's integers: a 400, not a 500 (found by the schemathesis run).
    huge = client.get("/admin/principles", params={"min_support": 2**63}, headers=ADMIN)
    assert huge.status_code == 400 and huge.json()["error"]["param"] == "min_support"

    r = client.post(f"/admin/principles/{a['id']}/approve", json={"mode": "both"},
                    headers={**ADMIN, "X-Operator": "ana"})
    assert r.status_code == 200 and r.json()["status"] == "approved" and r.json()["mode"] == "both"

    r = client.patch(f"/admin/principles/{a['id']}", json={"text": "No emojis in work emails", "domain": "work email"},
                     headers=ADMIN)
    assert r.json()["text"] == "No emojis in work emails" and r.json()["domain"] == "work email"
    assert client.patch(f"/admin/principles/{a['id']}", json={}, headers=ADMIN).status_code == 400
    assert client.patch(f"/admin/principles/{a['id']}", json={"mode": "sideways"}, headers=ADMIN).status_code == 400
    assert client.patch(f"/admin/principles/{a['id']}", json={"status": "approved"}, headers=ADMIN).status_code == 400

    assert client.post(f"/admin/principles/{c['id']}/reject", json={}, headers=ADMIN).status_code == 400
    r = client.post(f"/admin/principles/{c['id']}/reject", json={"reason": "not ours to decide"}, headers=ADMIN)
    assert r.json()["status"] == "rejected" and r.json()["reject_reason"] == "not ours to decide"

    r = client.post(f"/admin/principles/{b['id']}/merge", json={"into": a["id"]}, headers=ADMIN)
    assert r.status_code == 200
    assert client.get(f"/admin/principles/{b['id']}", headers=ADMIN).json()["merged_into"] == a["id"]
    assert client.post(f"/admin/principles/{a['id']}/merge", json={"into": a["id"]}, headers=ADMIN).status_code == 400
    assert client.get("/admin/principles/pr-none", headers=ADMIN).status_code == 404

    shown = client.get(f"/admin/principles/{a['id']}", headers=ADMIN).json()
    actions = [(x["action"], x["actor"]) for x in shown["audit"]]
    assert ("approve", "ana") in actions and ("edit", "admin") in actions and ("merge_in", "admin") in actions
    approve = next(x for x in shown["audit"] if x["action"] == "approve")
    assert approve["before"]["status"] == "candidate" and approve["after"]["status"] == "approved"


def test_evidence_links_back_to_the_conversation(client):
    c = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Draft an email"}]}).json()
    fb = client.post("/v1/feedback", json={"completion_id": c["id"], "comment": "no emojis in my work emails"}).json()
    p = seed(client, evidence=[{"kind": "feedback", "id": fb["id"]}])
    shown = client.get(f"/admin/principles/{p['id']}", headers=ADMIN).json()
    [ev] = shown["evidence_detail"]
    assert ev["text"] == "no emojis in my work emails" and ev["prompt"] == "Draft an email"
    conv = client.get(ev["conversation_url"], headers=ADMIN).json()
    assert [x["id"] for x in conv["completions"]] == [c["id"]]
    assert [x["id"] for x in conv["feedback"]] == [fb["id"]]


def test_approved_principle_applies_in_its_domain_only(client):
    p = seed(client)
    in_domain = [{"role": "user", "content": "Write an email to my manager about the project deadline."}]
    out_domain = [{"role": "user", "content": "What is the boiling point of water?"}]

    def applied(messages):
        body = client.post("/v1/chat/completions", json={"messages": messages}).json()
        con = sqlite3.connect(client.app.state.settings.db_path)
        row = con.execute("SELECT principles_applied FROM completions WHERE id = ?", (body["id"],)).fetchone()
        return json.loads(row[0])

    assert applied(in_domain) == []  # a candidate is not applied
    client.post(f"/admin/principles/{p['id']}/approve", headers=ADMIN)
    assert applied(in_domain) == [p["id"]]
    assert applied(out_domain) == []
    client.patch(f"/admin/principles/{p['id']}", json={"mode": "adapter"}, headers=ADMIN)
    assert applied(in_domain) == []  # adapter-only principles are not prompted


def test_with_principles_adds_rules_to_the_system_prompt():
    from policies.scope import with_principles

    rules = [{"text": "No emojis."}]
    assert with_principles([{"role": "user", "content": "hi"}], rules)[0] == {
        "role": "system", "content": "Follow these rules:\n- No emojis."}
    merged = with_principles([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}], rules)
    assert merged[0]["content"] == "Be kind.\n\nFollow these rules:\n- No emojis." and len(merged) == 2


def test_scope_matcher_lexical_and_teacher():
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from policies.scope import ScopeMatcher, lexical_score

    assert lexical_score("work emails", "Write an email to my boss") >= 0.5
    assert lexical_score("work emails", "Write a poem about work") < 0.5
    assert lexical_score("gardening", "Tips for gardening in spring?") == 1.0
    assert lexical_score("gardening", "How do I bake bread?") == 0.0
    # A borderline request goes to a capable teacher, whose verdict wins.
    teacher = FakeListChatModel(responses=['{"in_scope": true}'])
    m = ScopeMatcher(llm=teacher)
    assert m.in_scope("work emails", "Write a poem about work") is True
    assert m.in_scope("work emails", "Write a poem about work") is True  # cached: no second answer needed
    assert ScopeMatcher().in_scope("work emails", "Write a poem about work") is False
    # A principle for "all requests" (GLOBAL_DOMAIN) applies to every request, teacher or not.
    from policies.principles import GLOBAL_DOMAIN

    assert ScopeMatcher().in_scope(GLOBAL_DOMAIN, "How do I bake bread?") is True
    assert ScopeMatcher().applicable([{"domain": "All requests.", "text": "Be brief"}],
                                     [{"role": "user", "content": "hi"}]) != []


def test_cli_principles(client, tmp_path):
    from service.cli import app

    p = seed(client)
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    listed = runner.invoke(app, ["principles", "list", "--json", *data])
    assert listed.exit_code == 0 and json.loads(listed.stdout.splitlines()[0])["id"] == p["id"]
    r = runner.invoke(app, ["principles", "approve", p["id"], "--mode", "prompt", "--actor", "cli-op", *data])
    assert r.exit_code == 0 and json.loads(r.stdout)["status"] == "approved"
    r = runner.invoke(app, ["principles", "edit", p["id"], "--text", "No emojis, ever, in work emails", *data])
    assert r.exit_code == 0 and json.loads(r.stdout)["text"] == "No emojis, ever, in work emails"
    r = runner.invoke(app, ["principles", "show", p["id"], *data])
    assert [a["actor"] for a in json.loads(r.stdout)["audit"]][:2] == [__import__("os").environ.get("USER", "cli"), "cli-op"]
    r = runner.invoke(app, ["principles", "reject", p["id"], "--reason", "changed my mind", *data])
    assert r.exit_code == 0 and json.loads(r.stdout)["status"] == "rejected"
    assert runner.invoke(app, ["principles", "show", "pr-missing", *data]).exit_code == 2
    r = runner.invoke(app, ["principles", "add", "--text", "Answer cooking questions in metric units",
                            "--domain", "cooking and recipes", "--check", "max_words 200", "--actor", "cli-op", *data])
    assert r.exit_code == 0, r.output
    added = json.loads(r.stdout)
    assert (added["status"], added["source"], added["checks"]) == ("candidate", "operator", ["max_words 200"])
    bad = runner.invoke(app, ["principles", "add", "--text", "x", "--domain", "y", "--check", "nonsense", *data])
    assert bad.exit_code == 1 and "does not parse" in bad.output
    # The running server sees the CLI's change.
    assert client.get(f"/admin/principles/{p['id']}", headers=ADMIN).json()["status"] == "rejected"


@pytest.mark.parametrize("params", [{"trian": {}}, {"train": {"epoch": 2}}, {"train": {"epochs": 0}},
                                    {"synthesis": {"n_in_scope": "many"}}, {"gate": {"max_near_scope": 2}},
                                    {"train": {"model": "/elsewhere"}}])
def test_job_overrides_are_checked_when_queued(client, params):
    r = client.post("/admin/jobs", json={"params": params}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "params", r.text
    assert client.get("/admin/jobs", headers=ADMIN).json()["data"] == []


def test_scope_matcher_survives_a_failing_teacher():
    """The scope check runs on the request path: a teacher that errors, hangs or never answers
    in the schema leaves the lexical verdict, is reported with its raw answer, and is asked again
    next time; a partial match (only the head word) is the teacher's call when it is capable."""
    import time

    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from policies.scope import ScopeMatcher, lexical_score

    class Down(FakeListChatModel):
        def _call(self, *a, **k):
            raise ConnectionError("teacher unreachable")

    class Slow(FakeListChatModel):
        def _call(self, *a, **k):
            time.sleep(1.0)
            return '{"in_scope": false}'

    failures = []
    record = lambda *a: failures.append(a)  # noqa: E731
    borderline = ("work emails", "Write a poem about work")  # lexical: out of scope
    assert ScopeMatcher(llm=Down(responses=["x"]), on_failure=record).in_scope(*borderline) is False
    assert failures[-1][0] == "scope" and "ConnectionError" in failures[-1][3][0]
    slow = ScopeMatcher(llm=Slow(responses=["x"]), timeout_s=0.1, on_failure=record)
    t = time.perf_counter()
    assert slow.in_scope(*borderline) is False and time.perf_counter() - t < 0.8
    assert "no answer within" in failures[-1][3][0]
    babble = ScopeMatcher(llm=FakeListChatModel(responses=["sure thing", "maybe?", '{"in_scope": true}']),
                          on_failure=record)
    assert babble.in_scope(*borderline) is False  # two unparseable answers: the fallback...
    assert failures[-1][2] == ["sure thing", "maybe?"]  # ...reported with the raw text
    assert babble.in_scope(*borderline) is True  # not cached: asked again, and answered
    # The head word alone ("code") scores 2/3: a capable teacher decides it.
    assert lexical_score("python code", "Fix this JavaScript code") > 0.5
    no = ScopeMatcher(llm=FakeListChatModel(responses=['{"in_scope": false}']))
    assert no.in_scope("python code", "Fix this JavaScript code") is False
    assert ScopeMatcher().in_scope("python code", "Fix this JavaScript code") is True  # no teacher: lexical


def test_merging_keeps_evidence_counted_once(client):
    a = seed(client, evidence=[{"kind": "feedback", "id": "fb-a"}])
    b = seed(client, evidence=[{"kind": "feedback", "id": "fb-b"}])
    c = seed(client, evidence=[{"kind": "feedback", "id": "fb-c"}])
    assert client.post(f"/admin/principles/{c['id']}/merge", json={"into": b["id"]}, headers=ADMIN).status_code == 200
    assert client.post(f"/admin/principles/{b['id']}/merge", json={"into": a["id"]}, headers=ADMIN).status_code == 200
    # c's evidence went to b, then to a; c now points at a, where it lives.
    shown = client.get(f"/admin/principles/{a['id']}", headers=ADMIN).json()
    assert shown["support"] == 3
    assert client.get(f"/admin/principles/{c['id']}", headers=ADMIN).json()["merged_into"] == a["id"]
    # A merged principle cannot be merged again (its evidence would count twice).
    d = seed(client)
    r = client.post(f"/admin/principles/{c['id']}/merge", json={"into": d["id"]}, headers=ADMIN)
    assert r.status_code == 409
    assert client.get(f"/admin/principles/{d['id']}", headers=ADMIN).json()["support"] == 1


def test_same_scope():
    from policies.scope import same_scope

    assert same_scope("work emails", "Work email.") and same_scope("All requests.", "all requests")
    assert not same_scope("all requests", "work emails") and not same_scope("work emails", "emails")


def test_operator_writes_a_principle(client):
    body = {"text": "When I ask about astronomy, begin with 'Star note:'", "domain": "questions about astronomy",
            "checks": ['starts_with "Star note:"'], "mode": "both"}
    r = client.post("/admin/principles", json=body, headers={**ADMIN, "X-Operator": "ana"})
    assert r.status_code == 201
    p = r.json()
    assert (p["status"], p["mode"], p["source"], p["effect"]) == ("candidate", "both", "operator", body["text"])
    shown = client.get(f"/admin/principles/{p['id']}", headers=ADMIN).json()
    assert shown["checks"] == body["checks"] and [(a["action"], a["actor"]) for a in shown["audit"]] == [("propose", "ana")]
    assert p["id"] in {x["id"] for x in client.get("/admin/principles", headers=ADMIN).json()["data"]}


@pytest.mark.parametrize("body, param", [
    ({"domain": "gardening"}, "text"),
    ({"text": "Be brief", "domain": ""}, "domain"),
    ({"text": "Be brief", "domain": "gardening", "checks": ["starts_with"]}, "checks"),
    ({"text": "Be brief", "domain": "gardening", "checks": ["no_such_metric 3"]}, "checks"),
    ({"text": "Be brief", "domain": "gardening", "mode": "sometimes"}, "mode"),
    ({"text": "Be brief", "domain": "gardening", "status": "approved"}, "status"),
    ({"text": "   ", "domain": "gardening"}, "text"),
])
def test_bad_principles_are_refused_and_nothing_is_written(client, body, param):
    before = client.get("/admin/principles", headers=ADMIN).json()["data"]
    r = client.post("/admin/principles", json=body, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert client.get("/admin/principles", headers=ADMIN).json()["data"] == before
    assert client.post("/admin/principles", json={"text": "Be brief", "domain": "x"}).status_code == 401


def test_scope_preview_scores_logged_requests(client):
    for q in ("Why does the Moon have phases?", "How do I repot a cactus?"):
        client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": q}], "max_tokens": 2})
    client.app.state.scope.ready.wait(120)
    r = client.get("/admin/scope-preview", params={"domain": "questions about astronomy"}, headers=ADMIN)
    assert r.status_code == 200
    data = r.json()
    assert data["scorer"] == "encoder" and data["topics"] == ["astronomy"]
    assert [a["request"] for a in data["applies"]] == ["Why does the Moon have phases?"]
    assert "How do I repot a cactus?" in [a["request"] for a in data["closest_outside"]]
    assert client.get("/admin/scope-preview", headers=ADMIN).status_code == 400  # domain is required
