"""What the end-to-end benchmarks share: a fresh data directory, `refinery serve` on loopback until
it answers, and the `refinery` commands run as a user runs them (bench/corrections.py,
bench/loop.py)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(data_dir: Path, **extra: str) -> dict:
    """A fresh data directory, no teacher, the models cached where the install put them."""
    return dict(os.environ, REFINERY_DATA_DIR=str(data_dir), REFINERY_TEACHER="none",
                REFINERY_MODEL_CACHE=os.environ.get("REFINERY_MODEL_CACHE", str(ROOT / ".cache" / "models")), **extra)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True)


@contextlib.contextmanager
def serving(env: dict, start_timeout_s: float = 300):
    """`refinery serve` on a free loopback port; yields its URL, stops it afterwards."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + start_timeout_s
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def generate(env: dict, tmp: Path, name: str, prompts: list[str], adapter: Path | None, max_tokens: int,
             everywhere: bool = False) -> list[dict]:
    """`refinery generate` rows: "response", and with an adapter "adapter_applied" (its scope)."""
    src, out = tmp / f"{name}.jsonl", tmp / f"{name}-out.jsonl"
    src.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in prompts))
    args = ["generate", "--prompts", str(src), "--out", str(out), "--max-tokens", str(max_tokens)]
    r = cli(env, *args, *(["--adapter", str(adapter)] if adapter else []), *(["--everywhere"] if everywhere else []))
    if r.returncode:
        raise SystemExit(f"refinery generate failed: {r.stderr[-2000:]}")
    return [json.loads(line) for line in out.read_text().splitlines()]
