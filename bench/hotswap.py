"""Hot-swap benchmark: N concurrent streaming clients for T seconds against a live server while
adapter versions are promoted and rolled back K times.

Each adapter's answers can be told apart: with `--adapters train` (default) each is trained
with `refinery train` on a tiny data set to start its answers with its own marker; with
`--adapters random` they are random LoRA weights, told apart by their exact greedy answer.

Reports failed requests (goal 0), mixed-version answers (goal 0), swap latency p50/p99,
time-to-first-token with and without swaps, and the server's memory: at the start, after the calm
phase, every 20 swaps and at the end (growth during the calm phase is the allocator warming up;
growth with the swap count would be a leak).
Prints a table and writes bench/results/hotswap.json.

    python bench/hotswap.py --clients 4 --seconds 30 --swaps 40
    python bench/hotswap.py --vllm 2 --adapters random --clients 6 --seconds 120 --swaps 20

--vllm N puts the server in front of N vLLM replicas it starts on loopback (REFINERY_ENGINE=vllm,
the environment `scripts/install.sh --test` makes); the memory figures are then Refinery's own
process, not the replicas'.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MARKERS = ["[alpha]", "[beta]"]
PROMPTS = ["Tell me about the moon.", "Give me a tip for cooking rice.", "What is a good name for a dog?",
           "How do plants drink water?", "Describe a quiet morning.", "Why do we sleep?"]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def train_marker_adapters(out: Path, model: str | None, cache: Path) -> list[Path]:
    """Two adapters, each taught to open every answer with its own marker."""
    from adapters.generate import generate
    from adapters.model import load_model

    lm = load_model(model, cache)
    prompts = [f"Question {i}: {p}" for i, p in enumerate(PROMPTS * 4)][:20]
    base = generate(lm.model, lm.tokenizer, [[{"role": "user", "content": p}] for p in prompts], max_new_tokens=32,
                    progress=False)
    dirs = []
    for marker in MARKERS:
        prefs = out / f"prefs-{marker.strip('[]')}.jsonl"
        with open(prefs, "w") as f:
            for p, b in zip(prompts, base):
                f.write(json.dumps({"prompt": p, "chosen": f"{marker} {b}", "rejected": b}) + "\n")
        target = out / f"adapter-{marker.strip('[]')}"
        cmd = [sys.executable, "-m", "service.cli", "train", "--preferences", str(prefs), "--out", str(target)]
        if model:
            cmd += ["--model", model]
        subprocess.run(cmd, check=True, env={**__import__("os").environ, "REFINERY_MODEL_CACHE": str(cache)})
        dirs.append(target)
    return dirs


def random_adapters(out: Path, model: str | None, cache: Path) -> list[Path]:
    from adapters.model import resolve_model_path
    from tests.fixtures.models import make_lora

    path, _ = resolve_model_path(model, cache)
    return [Path(make_lora(path, out / f"random-{i}", seed=100 + i)) for i in range(2)]


class Load:
    """Streaming clients in threads; every answer is checked against the version that says it made it."""

    def __init__(self, url: str, clients: int, max_tokens: int, classify, abandon: float = 0.0):
        self.url, self.clients, self.max_tokens, self.classify = url, clients, max_tokens, classify
        self.ttft, self.failures, self.mixed, self.answers, self.abandoned = [], [], [], 0, 0
        self.stop = threading.Event()
        self.abandon = abandon  # share of requests whose client hangs up after the second token
        self.rng = random.Random(0)

    def one(self, i: int) -> None:
        body = {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "model": "refinery",
                "temperature": 0, "max_tokens": self.max_tokens, "stream": True}
        start = time.perf_counter()
        first, models, text = None, set(), []
        leave = self.rng.random() < self.abandon
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=body, timeout=120) as r:
                if r.status_code != 200:
                    r.read()
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
                for line in r.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        raise RuntimeError(chunk["error"]["message"])
                    models.add(chunk["model"])
                    if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        first = first or time.perf_counter()
                        text.append(chunk["choices"][0]["delta"]["content"])
                        if leave and len(text) == 2:
                            break  # closing the stream: the server sees the client go
            if leave and len(text) >= 2:
                self.abandoned += 1
                return
        except Exception as exc:
            self.failures.append(repr(exc))
            return
        self.answers += 1
        if first:
            self.ttft.append(first - start)
        answer = "".join(text)
        if len(models) != 1 or not self.classify(next(iter(models)), PROMPTS[i % len(PROMPTS)], answer):
            self.mixed.append({"models": sorted(models), "answer": answer[:80]})

    def run(self, seconds: float) -> None:
        def worker(k):
            i = k
            while not self.stop.is_set():
                self.one(i)
                i += self.clients

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(self.clients)]
        for t in threads:
            t.start()
        time.sleep(seconds)
        self.stop.set()
        for t in threads:
            t.join(180)


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--swaps", type=int, default=40, help="Promotions and rollbacks during the swap phase.")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--abandon", type=float, default=0.0,
                    help="share of requests whose client hangs up after two tokens (their versions may be unloading)")
    ap.add_argument("--adapters", choices=["train", "random"], default="train")
    ap.add_argument("--model", default=None, help="Base model (default: the embedded one).")
    ap.add_argument("--model-cache", default=str(ROOT / ".cache" / "models"))
    ap.add_argument("--vllm", type=int, default=0, help="Serve through this many vLLM replicas started here.")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "hotswap.json"))
    args = ap.parse_args()

    from tests.fixtures.server import LiveServer

    work = Path(tempfile.mkdtemp(prefix="bench-hotswap-"))
    cache = Path(args.model_cache)
    dirs = (train_marker_adapters if args.adapters == "train" else random_adapters)(work, args.model, cache)
    (work / "data").mkdir()
    env, replicas, model = {"REFINERY_ADMIN_KEY": "bench"}, [], args.model
    if args.vllm:
        from adapters.model import resolve_model_path
        from tests.fixtures.vllm import VLLMServer

        model = resolve_model_path(args.model, cache)[0]
        replicas = [VLLMServer(Path(model), work).start() for _ in range(args.vllm)]
        for r in replicas:
            r.wait()
        env.update(REFINERY_ENGINE="vllm", REFINERY_ENGINE_URLS=",".join(r.url for r in replicas))
    server = LiveServer(work / "data", cache, model, env=env).start(timeout=300)
    admin = {"Authorization": "Bearer bench"}
    try:
        versions = [httpx.post(server.url + "/admin/adapters", json={"path": str(d), "name": "refinery"},
                               headers=admin, timeout=120).json()["id"] for d in dirs]
        solo = {}
        for v in versions:
            for p in PROMPTS:
                r = httpx.post(server.url + "/v1/chat/completions", timeout=120, json={
                    "messages": [{"role": "user", "content": p}], "model": v, "temperature": 0,
                    "max_tokens": args.max_tokens}).json()
                solo[(v, p)] = r["choices"][0]["message"]["content"]
        markers = dict(zip(versions, MARKERS))

        def classify(model, prompt, answer):
            if args.adapters == "train":
                return answer.strip().startswith(markers[model])
            return answer == solo[(model, prompt)]

        httpx.post(server.url + f"/admin/adapters/{versions[0]}/promote", headers=admin, timeout=120).raise_for_status()
        rss_start = rss_kb(server.proc.pid)

        calm = Load(server.url, args.clients, args.max_tokens, classify, args.abandon)
        calm.run(args.seconds / 2)
        rss_calm_end = rss_kb(server.proc.pid)
        rss_samples = []  # (swaps done, MB) every 20 swaps: flat means swapping leaks nothing

        swapping = Load(server.url, args.clients, args.max_tokens, classify, args.abandon)
        swap_latency = []

        def swapper():
            interval = (args.seconds / 2) / max(args.swaps, 1)
            for k in range(args.swaps):
                t = time.perf_counter()
                if k % 2 == 0:
                    r = httpx.post(server.url + f"/admin/adapters/{versions[1]}/promote", headers=admin, timeout=120)
                else:
                    r = httpx.post(server.url + "/admin/adapters/refinery/rollback", headers=admin, timeout=120)
                if r.status_code != 200:
                    swapping.failures.append(f"swap {k}: {r.text}")
                swap_latency.append(time.perf_counter() - t)
                if (k + 1) % 20 == 0:
                    rss_samples.append((k + 1, round(rss_kb(server.proc.pid) / 1024, 1)))
                time.sleep(max(0.0, interval - swap_latency[-1]))

        st = threading.Thread(target=swapper)
        st.start()
        swapping.run(args.seconds / 2)
        st.join()
        rss_end = rss_kb(server.proc.pid)
        loads = {}
        for line in httpx.get(server.url + "/metrics", timeout=30).text.splitlines():
            if line.startswith("refinery_adapter_loads_total"):
                loads[line.split('"')[1]] = int(float(line.split()[-1]))
    finally:
        server.stop()
        for r in replicas:
            r.stop()

    result = {
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
        "config": vars(args),
        "answers": {"calm": calm.answers, "swapping": swapping.answers},
        "abandoned": {"calm": calm.abandoned, "swapping": swapping.abandoned},
        "failed_requests": len(calm.failures) + len(swapping.failures),
        "mixed_version_answers": len(calm.mixed) + len(swapping.mixed),
        "mixed_examples": (calm.mixed + swapping.mixed)[:5],
        "failures": (calm.failures + swapping.failures)[:5],
        "failed_by_phase": {"calm": len(calm.failures), "swapping": len(swapping.failures)},
        "swaps": len(swap_latency),
        "swap_latency_p50_s": pct(swap_latency, 0.5),
        "swap_latency_p99_s": pct(swap_latency, 0.99),
        "ttft_p50_without_swaps_s": pct(calm.ttft, 0.5),
        "ttft_p99_without_swaps_s": pct(calm.ttft, 0.99),
        "ttft_p50_with_swaps_s": pct(swapping.ttft, 0.5),
        "ttft_p99_with_swaps_s": pct(swapping.ttft, 0.99),
        "server_rss_mb_start": rss_start / 1024,
        "server_rss_mb_calm_end": rss_calm_end / 1024,
        "server_rss_mb_end": rss_end / 1024,
        "server_rss_mb_by_swaps": rss_samples,
        "adapter_loads": loads,  # peft: new LoRA layers; copy: weights copied into idle layers
    }
    print(f"\n{'metric':<32} value")
    for key in ("answers", "abandoned", "failed_requests", "mixed_version_answers", "swaps", "swap_latency_p50_s",
                "swap_latency_p99_s", "ttft_p50_without_swaps_s", "ttft_p99_without_swaps_s",
                "ttft_p50_with_swaps_s", "ttft_p99_with_swaps_s", "server_rss_mb_start", "server_rss_mb_calm_end",
                "server_rss_mb_end", "server_rss_mb_by_swaps", "adapter_loads"):
        v = result[key]
        print(f"{key:<32} {v:.3f}" if isinstance(v, float) else f"{key:<32} {v}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
