"""Serving adapter versions: promotion, rollback, pinned versions, canary, restart, bad adapters,
outcomes and the automatic rollback rule."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from typer.testing import CliRunner

from tests.fixtures.app import wait_healthy
from tests.fixtures.models import make_lora

ADMIN = {"Authorization": "Bearer adm"}
Q = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def loras(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("loras")
    return {k: make_lora(tiny_model_dir, root / k, seed) for k, seed in (("a", 1), ("b", 2), ("c", 3))}


def make_client(data_dir, tiny_model_dir, model_cache, **kw):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(data_dir=data_dir, model=str(tiny_model_dir), model_cache=model_cache, _env_file=None,
                        admin_key="adm", default_max_tokens=8, registry_poll_s=0.1, **kw)
    return TestClient(create_app(settings))


@pytest.fixture()
def client(tmp_path, tiny_model_dir, model_cache):
    with make_client(tmp_path, tiny_model_dir, model_cache) as c:
        wait_healthy(c)
        yield c


def ask(client, model=None, user=None, messages=Q):
    body = {"messages": messages, "temperature": 0, "max_tokens": 8}
    if model:
        body["model"] = model
    if user:
        body["user"] = user
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def register(client, path, name="refinery"):
    r = client.post("/admin/adapters", json={"path": path, "name": name}, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def stored_version(client, completion_id):
    con = sqlite3.connect(client.app.state.settings.db_path)
    return con.execute("SELECT model, adapter_version FROM completions WHERE id = ?", (completion_id,)).fetchone()


def test_promote_rollback_pinned_and_models(client, loras):
    base = ask(client)
    assert base["model"] == client.app.state.engine.model_id
    v1, v2 = register(client, loras["a"]), register(client, loras["b"])
    assert (v1, v2) == ("refinery@v1", "refinery@v2")
    assert ask(client)["model"] == base["model"]  # registered is not serving

    pinned = {v: ask(client, v) for v in (v1, v2)}
    assert pinned[v1]["model"] == v1 and pinned[v2]["model"] == v2
    texts = {v: r["choices"][0]["message"]["content"] for v, r in pinned.items()}
    assert len({texts[v1], texts[v2], base["choices"][0]["message"]["content"]}) == 3

    r = client.post(f"/admin/adapters/{v1}/promote", headers=ADMIN)
    assert r.status_code == 200 and r.json()["serving"]["refinery"]["active"] == v1
    for model in (None, "refinery", "default"):
        ans = ask(client, model)
        assert ans["model"] == v1 and ans["choices"][0]["message"]["content"] == texts[v1]
        assert stored_version(client, ans["id"]) == (v1, v1)
    assert ask(client, client.app.state.engine.model_id)["model"] == base["model"]  # base stays reachable

    client.post(f"/admin/adapters/{v2}/promote", headers=ADMIN)
    assert ask(client)["model"] == v2
    listed = client.get("/admin/adapters", headers=ADMIN).json()
    status = {a["id"]: a["status"] for a in listed["data"]}
    assert status == {v1: "retired", v2: "active"}
    assert client.post("/admin/adapters/refinery/rollback", headers=ADMIN).json()["serving"]["refinery"]["active"] == v1
    assert ask(client)["model"] == v1
    assert ask(client, v2)["model"] == v2  # a retired version can still be pinned

    models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert models[0] == base["model"] and {"refinery", v1, v2} <= set(models)
    r = client.post("/v1/chat/completions", json={"messages": Q, "model": "refinery@v9"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"

    outcome = next(a for a in client.get("/admin/adapters", headers=ADMIN).json()["data"] if a["id"] == v1)["outcomes"]
    assert outcome["requests"] >= 4

    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    loads = {s.labels["kind"]: s.value for s in families["refinery_adapter_loads"].samples if s.name.endswith("_total")}
    assert loads["peft"] >= 1 and loads["peft"] + loads["copy"] >= 2  # both versions were loaded
    assert families["refinery_adapters_loaded"].samples[0].value == len(client.app.state.engine.adapters) >= 1


def test_bad_adapters_are_refused_and_serving_stays(client, loras, tmp_path, tiny_model_dir):
    v1 = register(client, loras["a"])
    client.post(f"/admin/adapters/{v1}/promote", headers=ADMIN)

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text((__import__("pathlib").Path(loras["a"]) / "adapter_config.json").read_text())
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04not really")
    r = client.post("/admin/adapters", json={"path": str(pickled), "name": "refinery"}, headers=ADMIN)
    assert r.status_code == 400 and "pickle" in r.json()["error"]["message"].lower()

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_text((__import__("pathlib").Path(loras["a"]) / "adapter_config.json").read_text())
    (corrupt / "adapter_model.safetensors").write_bytes(b"garbage" * 10)
    r = client.post("/admin/adapters", json={"path": str(corrupt), "name": "refinery"}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["code"] == "adapter_rejected"

    # Same base model id, different shapes: only loading onto the served model can tell.
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.hidden_size, cfg.intermediate_size = 48, 96
    wide = tmp_path / "wide-base"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(wide)
    misfit = make_lora(wide, tmp_path / "misfit", 5)
    cfg_path = __import__("pathlib").Path(misfit) / "adapter_config.json"
    conf = json.loads(cfg_path.read_text())
    conf["base_model_name_or_path"] = str(tiny_model_dir)
    cfg_path.write_text(json.dumps(conf))
    v_bad = register(client, misfit)
    r = client.post(f"/admin/adapters/{v_bad}/promote", headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["code"] == "adapter_rejected"
    assert ask(client)["model"] == v1  # still serving the old version
    assert next(a for a in client.get("/admin/adapters", headers=ADMIN).json()["data"] if a["id"] == v_bad)["status"] == "rejected"


def test_canary_split_is_sticky_per_user(client, loras):
    v1, v2 = register(client, loras["a"]), register(client, loras["b"])
    client.post(f"/admin/adapters/{v1}/promote", headers=ADMIN)
    r = client.post(f"/admin/adapters/{v2}/canary", json={"share": 0.3}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["serving"]["refinery"]["canary"] == v2
    seen = {f"user-{i}": ask(client, user=f"user-{i}")["model"] for i in range(40)}
    share = sum(m == v2 for m in seen.values()) / len(seen)
    assert 0.1 <= share <= 0.55 and set(seen.values()) == {v1, v2}
    for user in list(seen)[:8]:
        assert ask(client, user=user)["model"] == seen[user]  # sticky
    assert client.post(f"/admin/adapters/{v2}/canary", json={"share": 1.5}, headers=ADMIN).status_code == 400
    client.post("/admin/adapters/refinery/rollback", headers=ADMIN)  # ends the canary
    assert {ask(client, user=u)["model"] for u in list(seen)[:10]} == {v1}


def test_restart_serves_the_same_versions(tmp_path, tiny_model_dir, model_cache, loras):
    with make_client(tmp_path, tiny_model_dir, model_cache) as c:
        wait_healthy(c)
        v1, v2 = register(c, loras["a"]), register(c, loras["b"])
        c.post(f"/admin/adapters/{v1}/promote", headers=ADMIN)
        c.post(f"/admin/adapters/{v2}/canary", json={"share": 0.5}, headers=ADMIN)
        before = c.get("/admin/adapters", headers=ADMIN).json()["serving"]
    with make_client(tmp_path, tiny_model_dir, model_cache) as c:
        wait_healthy(c)
        assert c.get("/admin/adapters", headers=ADMIN).json()["serving"] == before
        assert ask(c, "refinery", user="someone")["model"] in (v1, v2)


def test_cli_promotion_reaches_the_running_server(client, loras):
    from service.cli import app

    data_dir = str(client.app.state.settings.data_dir)
    out = CliRunner().invoke(app, ["adapters", "register", loras["c"], "--name", "refinery", "--data-dir", data_dir])
    assert out.exit_code == 0, out.output
    vid = out.stdout.strip().splitlines()[-1]
    assert CliRunner().invoke(app, ["adapters", "promote", vid, "--data-dir", data_dir]).exit_code == 0
    deadline = time.time() + 1.0
    while time.time() < deadline and ask(client)["model"] != vid:
        time.sleep(0.05)
    assert ask(client)["model"] == vid


def test_canary_rule_on_synthetic_outcomes():
    from service.rollout.canary import judge_canary, two_proportion_p

    assert two_proportion_p(30, 100, 10, 100) < 0.001
    assert two_proportion_p(10, 100, 10, 100) == pytest.approx(0.5)
    worse = judge_canary({"requests": 100, "negative": 30}, {"requests": 100, "negative": 10}, 30, 0.05)
    assert worse.worse and "p = " in worse.reason
    same = judge_canary({"requests": 100, "negative": 12}, {"requests": 100, "negative": 10}, 30, 0.05)
    assert not same.worse
    few = judge_canary({"requests": 10, "negative": 9}, {"requests": 100, "negative": 1}, 30, 0.05)
    assert not few.worse and few.p_value is None


def test_worse_canary_is_rolled_back_automatically(client, loras):
    from service.store import new_id

    v1, v2 = register(client, loras["a"]), register(client, loras["b"])
    client.post(f"/admin/adapters/{v1}/promote", headers=ADMIN)
    client.post(f"/admin/adapters/{v2}/canary", json={"share": 0.5}, headers=ADMIN)
    store = client.app.state.store
    now = time.time() + 1
    with store.db.atomic():
        for version, n, bad in ((v1, 40, 2), (v2, 40, 20)):
            for i in range(n):
                cid = new_id("chatcmpl-")
                store.db["conversations"].insert({"id": cid, "created": now}, ignore=True)
                store.db["completions"].insert({
                    "id": cid, "created": now, "conversation_id": cid, "messages": "[]", "response": "x",
                    "status": "ok", "model": version, "adapter_version": version, "params": "{}", "stream": 0})
                if i < bad:
                    store.db["feedback"].insert({"id": new_id("fb-"), "created": now, "completion_id": cid,
                                                 "conversation_id": cid, "thumb": "down"})
    actions = client.app.state.rollout.check_canaries()
    assert len(actions) == 1 and actions[0].startswith(f"rolled back {v2}")
    listed = {a["id"]: a for a in client.get("/admin/adapters", headers=ADMIN).json()["data"]}
    assert listed[v2]["status"] == "rejected" and listed[v1]["status"] == "active"
    audit = client.get("/admin/adapters/audit", headers=ADMIN).json()["data"]
    assert any(e.get("actor") == "auto-rollback" and e.get("version") == v2 for e in audit)
    assert ask(client, user="anyone")["model"] == v1
    metrics = client.get("/metrics").text
    assert f'refinery_version_thumbs_down_rate{{version="{v2}"}} 0.5' in metrics


def test_a_scoped_version_answers_with_the_base_weights_outside_its_scope(client, loras, tmp_path):
    import shutil

    from policies.adapter_scope import AdapterScope

    scoped = tmp_path / "scoped"
    shutil.copytree(loras["a"], scoped)
    AdapterScope(requests=["What is the capital of Australia?"]).write(scoped)
    plain = register(client, loras["a"])
    v = register(client, str(scoped))
    client.post(f"/admin/adapters/{v}/promote", headers=ADMIN)
    assert client.app.state.scope.ready.wait(120) and client.app.state.scope.encoder is not None

    inside = [{"role": "user", "content": "Which city is Australia's capital?"}]
    outside = [{"role": "user", "content": "Write a haiku about morning coffee."}]
    base_model = client.app.state.engine.model_id
    text = lambda r: r["choices"][0]["message"]["content"]  # noqa: E731
    adapter_inside, base_outside = text(ask(client, plain, messages=inside)), text(ask(client, base_model, messages=outside))
    assert adapter_inside != text(ask(client, base_model, messages=inside))  # the adapter changes both answers
    assert text(ask(client, plain, messages=outside)) != base_outside

    served_in, served_out = ask(client, messages=inside), ask(client, messages=outside)
    assert served_in["model"] == served_out["model"] == v  # both answered by the version...
    assert text(served_in) == adapter_inside  # ...with its adapter inside its scope
    assert text(served_out) == base_outside  # ...and with the base weights outside it
    con = sqlite3.connect(client.app.state.settings.db_path)
    applied = dict(con.execute("SELECT id, adapter_applied FROM completions WHERE id IN (?, ?)",
                               (served_in["id"], served_out["id"])).fetchall())
    assert applied == {served_in["id"]: 1, served_out["id"]: 0}
    assert con.execute("SELECT adapter_applied FROM completions WHERE adapter_version IS NULL").fetchone() == (None,)

    bad = tmp_path / "bad-scope"
    shutil.copytree(loras["a"], bad)
    (bad / "scope.json").write_text('{"requests": "not a list"}')
    r = client.post("/admin/adapters", json={"path": str(bad), "name": "refinery"}, headers=ADMIN)
    assert r.status_code == 400 and "scope" in r.json()["error"]["message"]
