"""End to end with real vLLM: a real `refinery serve` (REFINERY_ENGINE=vllm) in front of two real
vLLM replicas on loopback, driven by the official openai client and compared with the same
requests sent to vLLM directly.

Two replicas decode slowly on a small CPU box, so every generation here is a few tokens long.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from service.serving.engines.replicas import preferred
from tests.fixtures.vllm import SERVED_NAME

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": "Bearer admin"}
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name a colour of the sky."}],
    [{"role": "user", "content": "Say hello."}],
]


@pytest.fixture(scope="module")
def loras(tmp_path_factory, embedded_model_dir):
    """Two random LoRA adapters on the embedded model: their greedy answers differ from the
    base model's and from each other's."""
    from tests.fixtures.models import make_lora

    root = tmp_path_factory.mktemp("loras")
    return [make_lora(embedded_model_dir, root / f"lora{seed}", seed=seed) for seed in (1, 2)]


@pytest.fixture(scope="module")
def refinery(tmp_path_factory, vllm_replicas, embedded_model_dir, model_cache):
    from tests.fixtures.server import LiveServer

    env = {"REFINERY_ENGINE": "vllm", "REFINERY_ENGINE_URLS": ",".join(r.url for r in vllm_replicas),
           "REFINERY_ADMIN_KEY": "admin", "REFINERY_BACKGROUND_ANALYSIS": "false", "REFINERY_RUN_JOBS": "false",
           "REFINERY_SCOPE_MATCHER": "lexical", "REFINERY_REGISTRY_POLL_S": "0.2", "REFINERY_ENGINE_HEALTH_S": "0.5",
           "REFINERY_DEFAULT_TEMPERATURE": "0"}
    server = LiveServer(tmp_path_factory.mktemp("refinery-vllm"), model_cache, model=str(embedded_model_dir),
                        env=env).start(timeout=300)
    yield server
    server.stop()
    for replica in vllm_replicas:  # the replicas are the session's: leave them as they were found
        for m in httpx.get(replica.url + "/v1/models", timeout=10).json()["data"]:
            if m.get("parent"):
                httpx.post(replica.url + "/v1/unload_lora_adapter", json={"lora_name": m["id"]}, timeout=60)


@pytest.fixture(scope="module")
def client(refinery):
    from openai import OpenAI

    return OpenAI(base_url=refinery.url + "/v1", api_key="unused", max_retries=0)


def admin(refinery, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, refinery.url + path, headers=ADMIN, timeout=300, **kw)


def register(refinery, path: str, name: str) -> str:
    r = admin(refinery, "POST", "/admin/adapters", json={"path": path, "name": name})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def streamed(client, messages, model="refinery", max_tokens=6):
    """(model named by the response, text, usage) of one streamed request."""
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    named, parts, usage = None, [], None
    for chunk in stream:
        named = named or chunk.model
        streamed.last_id = chunk.id
        usage = chunk.usage or usage
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return named, "".join(parts), usage


def test_health_lists_the_replicas(refinery, vllm_replicas):
    body = httpx.get(refinery.url + "/health", timeout=10).json()
    assert body["status"] == "ok" and body["model"] == SERVED_NAME
    assert {r["url"] for r in body["engine"]["replicas"]} == {r.url for r in vllm_replicas}
    assert all(r["up"] for r in body["engine"]["replicas"])


def test_openai_client_gets_what_vllm_direct_answers(client, refinery, vllm_replicas, loras):
    direct = vllm_replicas[0].chat(PROMPTS[0])
    plain = client.chat.completions.create(model=SERVED_NAME, messages=PROMPTS[0], max_tokens=6, temperature=0)
    assert plain.choices[0].message.content == direct and plain.model == SERVED_NAME
    named, text, usage = streamed(client, PROMPTS[0], model=SERVED_NAME)
    assert (named, text) == (SERVED_NAME, direct)
    assert usage.completion_tokens == plain.usage.completion_tokens and usage.prompt_tokens == plain.usage.prompt_tokens

    # An adapter version: Refinery loads it on both replicas under its own name, so vLLM can be
    # asked for it directly too.
    vid = register(refinery, loras[0], "direct")
    assert admin(refinery, "POST", f"/admin/adapters/{vid}/promote").status_code == 200
    for replica in vllm_replicas:
        models = httpx.get(replica.url + "/v1/models", timeout=10).json()["data"]
        assert vid in {m["id"] for m in models}
    direct_v = vllm_replicas[1].chat(PROMPTS[0], model=vid)
    assert direct_v != direct
    plain = client.chat.completions.create(model="direct", messages=PROMPTS[0], max_tokens=6, temperature=0)
    assert (plain.model, plain.choices[0].message.content) == (vid, direct_v)
    assert streamed(client, PROMPTS[0], model="direct")[:2] == (vid, direct_v)
    assert admin(refinery, "POST", f"/admin/adapters/{vid}/retire").status_code == 200


def test_the_stored_exchange_keeps_version_tokens_latency_and_ttft(client, refinery):
    import sqlite3

    named, text, usage = streamed(client, PROMPTS[1], model=SERVED_NAME)
    con = sqlite3.connect(refinery.data_dir / "refinery.db")
    con.row_factory = sqlite3.Row
    row = con.execute("SELECT * FROM completions WHERE id = ?", (streamed.last_id,)).fetchone()
    assert row["model"] == SERVED_NAME and row["status"] == "ok" and row["response"] == text
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert row["latency_ms"] > 0 and row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"]


def test_validation_and_engine_errors_come_back_in_the_openai_shape(refinery):
    url = refinery.url + "/v1/chat/completions"
    # Refinery's own 400 never reaches the engine.
    r = httpx.post(url, json={"messages": [{"role": "assistant", "content": "no user turn"}]}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_value"
    # vLLM refuses a seed past 2**63 - 1 that Refinery's own engine takes: its 400 is passed on.
    body = {"model": SERVED_NAME, "messages": PROMPTS[2], "max_tokens": 2, "seed": 2**64 - 1}
    r = httpx.post(url, json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and "seed" in err["message"]


def test_registration_refuses_a_rank_the_engine_cannot_serve(refinery, embedded_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
    get_peft_model(model, LoraConfig(r=32, target_modules=["q_proj"])).save_pretrained(tmp_path / "r32")
    r = admin(refinery, "POST", "/admin/adapters", json={"path": str(tmp_path / "r32"), "name": "wide"})
    assert r.status_code == 400 and "max_lora_rank 16" in r.json()["error"]["message"]


def test_a_client_that_goes_away_cancels_the_upstream_request(refinery, vllm_replicas):
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "Count from one to one thousand."}],
            "max_tokens": 400, "temperature": 0, "stream": True}
    before = sum(r.generated() for r in vllm_replicas)
    with httpx.stream("POST", refinery.url + "/v1/chat/completions", json=body, timeout=60) as resp:
        for line in resp.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break  # one token arrived: now hang up
    # Decoding on for the client that left would add several tokens a second, up to 400.
    assert tokens_once_settled(vllm_replicas, within=20) - before < 60
    assert last_exchange(refinery, "Count from one to one thousand.") == ("aborted", "client disconnected")


def tokens_once_settled(replicas, within: float) -> int:
    """vLLM's generated-token count summed over the replicas, once it stops rising (nothing is
    decoding any more); fails if it is still rising after `within` seconds."""
    deadline = time.time() + within
    while True:
        time.sleep(2.0)
        settled = sum(r.generated() for r in replicas)
        time.sleep(2.0)
        if sum(r.generated() for r in replicas) == settled:
            return settled
        assert time.time() < deadline, "vLLM kept decoding for a client that had gone"


def last_exchange(refinery, prompt: str) -> tuple:
    """(status, error) of the newest stored exchange whose messages hold `prompt`."""
    import sqlite3

    return sqlite3.connect(refinery.data_dir / "refinery.db").execute(
        "SELECT status, error FROM completions WHERE messages LIKE ? ORDER BY created DESC LIMIT 1",
        (f"%{prompt}%",)).fetchone()


def test_a_plain_request_whose_client_leaves_cancels_the_upstream_request(refinery, vllm_replicas):
    """Not streaming: the client gives up (its timeout) well before 1000 tokens; Refinery notices,
    cancels its request to vLLM, and stores the exchange as aborted."""
    prompt = "Write a very long story about a lighthouse keeper, chapter by chapter."
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": prompt}], "max_tokens": 1000,
            "temperature": 0}
    before = sum(r.generated() for r in vllm_replicas)
    with pytest.raises(httpx.TimeoutException):
        httpx.post(refinery.url + "/v1/chat/completions", json=body, timeout=0.75)
    assert tokens_once_settled(vllm_replicas, within=30) - before < 500
    assert last_exchange(refinery, prompt) == ("aborted", "client disconnected")


class Clients:
    """Streaming clients in threads, each sending the prompts in turn until stopped; every
    answer is kept with the version its response names."""

    def __init__(self, client, n: int, model: str, max_tokens: int = 4):
        self.client, self.model, self.max_tokens = client, model, max_tokens
        self.results: list[tuple[int, str, str]] = []  # (prompt index, version named, text)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, i: int) -> None:
        k = i
        while not self._stop.is_set():
            p = k % len(PROMPTS)
            try:
                named, text, _ = streamed(self.client, PROMPTS[p], model=self.model, max_tokens=self.max_tokens)
                self.results.append((p, named, text))
            except Exception as exc:  # counted, never raised in the thread
                self.errors.append(f"{type(exc).__name__}: {exc}")
            k += 1

    def __enter__(self) -> "Clients":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)


def served_counts(refinery) -> dict[str, int]:
    reps = httpx.get(refinery.url + "/health", timeout=10).json()["engine"]["replicas"]
    return {r["url"]: r["requests"] for r in reps}


def test_promotions_and_rollbacks_under_streaming_clients(client, refinery, vllm_replicas, loras):
    v1, v2 = register(refinery, loras[0], "swap"), register(refinery, loras[1], "swap")
    expected: dict[str, list[str]] = {}
    for vid in (v1, v2):
        assert admin(refinery, "POST", f"/admin/adapters/{vid}/promote").status_code == 200
        expected[vid] = [vllm_replicas[0].chat(p, model=vid, max_tokens=4) for p in PROMPTS]
    assert expected[v1] != expected[v2]
    before = served_counts(refinery)
    swaps = 0
    with Clients(client, 6, "swap") as clients:
        while swaps < 10:
            time.sleep(1.0)
            seen = len(clients.results)
            if swaps % 2 == 0:
                r, now = admin(refinery, "POST", "/admin/adapters/swap/rollback"), v1  # v2 -> v1
            else:
                r, now = admin(refinery, "POST", f"/admin/adapters/{v2}/promote"), v2
            assert r.status_code == 200, r.text
            swaps += 1
            # The next swap waits for an answer from this version (however slow the box is),
            # so every swap is exercised by requests on both sides of it.
            deadline = time.time() + 180
            while not any(n == now for _, n, _ in clients.results[seen:]):
                assert time.time() < deadline and not clients.errors, (swaps, clients.errors[:3])
                time.sleep(0.2)
        time.sleep(2.0)
    assert not clients.errors, clients.errors[:3]
    print(f"{len(clients.results)} streamed answers across {swaps} promotions/rollbacks, 0 failed")
    named = {n for _, n, _ in clients.results}
    assert named == {v1, v2}, named
    wrong = [(p, n, t) for p, n, t in clients.results if t != expected[n][p]]
    assert not wrong, f"{len(wrong)} of {len(clients.results)} answers differ from their version's: {wrong[:3]}"
    after = served_counts(refinery)
    assert all(after[u] > before[u] for u in after), (before, after)
    # Only the active version stays loaded: the other drained and was unloaded everywhere.
    time.sleep(1.0)
    for replica in vllm_replicas:
        loaded = {m["id"] for m in httpx.get(replica.url + "/v1/models", timeout=10).json()["data"] if m.get("parent")}
        assert loaded == {v2}, loaded


def test_a_killed_replica_fails_only_its_streams_and_rejoins_with_the_active_version(client, refinery, vllm_replicas,
                                                                                     loras):
    vid = register(refinery, loras[0], "sturdy")
    assert admin(refinery, "POST", f"/admin/adapters/{vid}/promote").status_code == 200
    victim, survivor = vllm_replicas
    with Clients(client, 6, "sturdy", max_tokens=8) as clients:
        time.sleep(4.0)
        reps = {r["url"]: r for r in httpx.get(refinery.url + "/health", timeout=10).json()["engine"]["replicas"]}
        streaming_on_victim = reps[victim.url]["in_flight"]
        answered_before = len(clients.results)
        victim.kill()
        time.sleep(8.0)
    print(f"{streaming_on_victim} streams on the killed replica, {len(clients.errors)} failed, "
          f"{len(clients.results)} answered")
    assert len(clients.errors) <= streaming_on_victim, (streaming_on_victim, clients.errors)
    assert len(clients.results) > answered_before  # the survivor went on answering
    assert all(n == vid for _, n, _ in clients.results)
    body = httpx.get(refinery.url + "/health", timeout=10).json()
    assert body["status"] == "ok"
    assert {r["url"]: r["up"] for r in body["engine"]["replicas"]} == {victim.url: False, survivor.url: True}

    # It comes back on the same address: the active version is loaded before it takes traffic.
    victim.start().wait()
    deadline = time.time() + 60
    while not all(r["up"] for r in httpx.get(refinery.url + "/health", timeout=10).json()["engine"]["replicas"]):
        assert time.time() < deadline, "the replica did not rejoin"
        time.sleep(0.5)
    loaded = {m["id"] for m in httpx.get(victim.url + "/v1/models", timeout=10).json()["data"] if m.get("parent")}
    assert vid in loaded
    # New conversations reach it again: two whose preferred replica (by the router's own
    # rendezvous hash) is the one that came back, two that prefer the survivor.
    urls = [victim.url, survivor.url]
    keys = {u: [k for k in (f"rejoin-{i}" for i in range(64))
                if preferred(k, urls) == u][:2] for u in urls}
    before = served_counts(refinery)
    for i, key in enumerate(keys[victim.url] + keys[survivor.url]):
        r = client.chat.completions.create(model="sturdy", messages=PROMPTS[i % len(PROMPTS)], max_tokens=2,
                                           temperature=0, extra_headers={"X-Conversation-Id": key})
        assert r.model == vid
    after = served_counts(refinery)
    assert {u: after[u] - before[u] for u in urls} == {victim.url: 2, survivor.url: 2}, (before, after)
