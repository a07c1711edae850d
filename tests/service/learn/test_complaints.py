"""Complaints -> better answers (DRIFT) in the server: the analyst samples one answer per complaint
from the served (tiny) model, verifies it and stores it for review, once; a teacher that never
answers in the schema is recorded and the answer left unverified, not dropped."""

from __future__ import annotations

import sqlite3

from langchain_core.language_models import FakeListChatModel

ADMIN = {"Authorization": "Bearer adm"}


def rows(client, sql, params=()):
    con = sqlite3.connect(client.app.state.settings.db_path)
    con.row_factory = sqlite3.Row
    return [dict(r) for r in con.execute(sql, params)]


def chat(client, messages):
    r = client.post("/v1/chat/completions", json={"messages": messages, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()


def test_each_complaint_gets_one_verified_or_explained_answer(tmp_path, tiny_model_dir, model_cache, semantic_models):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from tests.fixtures.app import wait_healthy

    settings = Settings(data_dir=tmp_path, model=str(tiny_model_dir), model_cache=model_cache, _env_file=None,
                        admin_key="adm", default_max_tokens=8, complaint_max_tokens=12, background_analysis=False,
                        teacher="none")
    with TestClient(create_app(settings)) as client:
        wait_healthy(client)
        long = chat(client, [{"role": "user", "content": "Explain how DNS works."}])
        assert client.post("/v1/feedback", json={"completion_id": long["id"], "thumb": "down",
                                                 "comment": "Way too long"}).status_code == 201
        fine = chat(client, [{"role": "user", "content": "Say hello."}])
        client.post("/v1/feedback", json={"completion_id": fine["id"], "thumb": "down"})  # no words: no complaint
        ask = [{"role": "user", "content": "How do I reverse a list in Python?"}]
        first = chat(client, ask)
        chat(client, ask + [{"role": "assistant", "content": first["choices"][0]["message"]["content"]},
                            {"role": "user", "content": "That doesn't work at all, it's wrong."}])

        counts = client.post("/admin/analyse", headers=ADMIN).json()
        made = rows(client, "SELECT * FROM refinements ORDER BY created")
        complaints = [("feedback", f["id"]) for f in rows(client, "SELECT id FROM feedback WHERE comment IS NOT NULL")]
        complaints += [("natural", n["id"]) for n in rows(
            client, "SELECT id FROM natural_feedback WHERE category IN ('aware_without_correction', 'repeat_rephrase')")]
        assert {(r["source"], r["source_id"]) for r in made} == set(complaints)
        assert counts["refined"] == len(made) >= 1
        [by_comment] = [r for r in made if r["source"] == "feedback"]
        assert by_comment["completion_id"] == long["id"] and by_comment["complaint"] == "Way too long"
        for r in made:
            assert r["status"] == ("proposed" if r["verified"] else "unverified") and r["detail"]
            assert r["method"] in ("checks", "teacher", "encoder", "none")
        if by_comment["method"] == "checks":  # the tiny model's answer was no degenerate loop
            assert by_comment["detail"] in ("passes length", "fails length")
            assert bool(by_comment["verified"]) == (len(by_comment["candidate"]) <= len(long["choices"][0]["message"]["content"]))

        # Done once: the next pass finds nothing new to sample.
        assert client.post("/admin/analyse", headers=ADMIN).json()["refined"] == 0

        # A teacher that never answers in the schema: reported, and the answer stays unverified.
        from service.learn.complaints import ComplaintRefiner

        store = client.app.state.store
        refiner = ComplaintRefiner(store, client.app.state.engine, FakeListChatModel(responses=["hmm", "no", "?"]),
                                   lambda: None)
        complaint = {"source": "feedback", "source_id": "fb-x", "complaint": "That's wrong.", "response": "Use a loop.",
                     "messages": ask, "category": None}
        v = refiner.verify(complaint, "Call my_list.reverse().")
        assert (v.passed, v.method) == (False, "teacher") and "llm_failures" in v.detail
        [failure] = rows(client, "SELECT * FROM llm_failures WHERE task = 'complaint_verification'")
        assert failure["ref"] == "fb-x" and "hmm" in failure["raw"]
        # Without a teacher or an encoder nothing can vouch for it.
        bare = ComplaintRefiner(store, client.app.state.engine, None, lambda: None)
        assert not bare.verify(complaint, "Call my_list.reverse().").passed
