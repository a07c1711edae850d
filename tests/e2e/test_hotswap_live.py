"""A real server swapping versions while clients stream: no failed request, no mixed answer."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.fixtures.models import make_lora

ADMIN = {"Authorization": "Bearer adm"}
BODY = {"messages": [{"role": "user", "content": "Hello there"}], "temperature": 0, "max_tokens": 12, "stream": True}


def stream_once(url: str, model: str) -> tuple[set[str], str]:
    models, text = set(), []
    with httpx.stream("POST", url + "/v1/chat/completions", json={**BODY, "model": model}, timeout=60) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                models.add(chunk["model"])
                if chunk["choices"]:
                    text.append(chunk["choices"][0]["delta"].get("content") or "")
    return models, "".join(text)


@pytest.mark.e2e
def test_swapping_while_streaming(tmp_path, tiny_model_dir, model_cache):
    from tests.fixtures.server import LiveServer

    v_dirs = [make_lora(tiny_model_dir, tmp_path / f"lora{i}", seed=10 + i) for i in range(2)]
    server = LiveServer(tmp_path / "data", model_cache, model=str(tiny_model_dir),
                        env={"REFINERY_ADMIN_KEY": "adm"})
    (tmp_path / "data").mkdir()
    server.start()
    try:
        versions = [httpx.post(server.url + "/admin/adapters", json={"path": d, "name": "refinery"},
                               headers=ADMIN, timeout=60).json()["id"] for d in v_dirs]
        solo = {v: stream_once(server.url, v)[1] for v in versions}
        assert len(set(solo.values())) == 2
        httpx.post(server.url + f"/admin/adapters/{versions[0]}/promote", headers=ADMIN, timeout=60).raise_for_status()

        results, failures, stop = [], [], threading.Event()

        def client():
            while not stop.is_set():
                try:
                    results.append(stream_once(server.url, "refinery"))
                except Exception as exc:  # any failure is a test failure, reported below
                    failures.append(repr(exc))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        swaps = 0
        deadline = time.time() + 8
        while time.time() < deadline:
            target = versions[(swaps + 1) % 2]
            r = httpx.post(server.url + f"/admin/adapters/{target}/promote", headers=ADMIN, timeout=60)
            assert r.status_code == 200, r.text
            swaps += 1
            time.sleep(0.25)
        stop.set()
        for t in threads:
            t.join(60)

        assert failures == []
        assert swaps >= 10 and len(results) >= 20
        served = {v: 0 for v in versions}
        for models, text in results:
            assert len(models) == 1  # every chunk of an answer names one version
            (model,) = models
            assert text == solo[model]  # and the answer is exactly that version's
            served[model] += 1
        assert all(n > 0 for n in served.values())
    finally:
        server.stop()
