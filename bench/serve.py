"""Serving benchmark: tokens/s and time-to-first-token at 1, 4 and 8 concurrent streaming
clients against a live server, next to `generate` called in-process on the same model and
prompts (their ratio is what the service costs).

    python bench/serve.py                      # starts its own server with the embedded model
    python bench/serve.py --url http://127.0.0.1:8000 --concurrency 1 4 8 --requests 8
    python bench/serve.py --side-by-side       # vLLM direct, Refinery in front of vLLM, embedded

--side-by-side starts one vLLM replica (the environment `scripts/install.sh --test` makes),
measures it directly, then through Refinery (REFINERY_ENGINE=vllm; the same tokens, so the
difference is what Refinery's loop costs), then Refinery's embedded engine, one at a time.

Prints a table and writes bench/results/serve.json (serve-side-by-side.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "Write a short paragraph about the history of tea.",
    "Explain how a bicycle stays upright.",
    "Give three tips for writing clear emails.",
    "Describe the water cycle for a ten-year-old.",
    "What should I pack for a weekend hike?",
    "Summarise the plot of a detective story you invent.",
    "Why is the sky blue?",
    "List some uses of baking soda around the house.",
]


async def one_request(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int, model: str | None = None) -> dict:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    if model:
        body["model"] = model
    start = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    return {"ttft": (first or end) - start, "latency": end - start, "tokens": tokens}


async def run_level(url: str, concurrency: int, requests: int, max_tokens: int, model: str | None = None) -> dict:
    queue = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
    results = []

    async def worker(client):
        while queue:
            results.append(await one_request(client, url, queue.pop(), max_tokens, model))

    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
        wall = time.perf_counter() - start
    ttfts = sorted(r["ttft"] for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "tokens": sum(r["tokens"] for r in results),
        "wall_s": wall,
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "ttft_p50_s": statistics.median(ttfts),
        "ttft_p95_s": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
    }


def in_process(concurrency: int, requests: int, max_tokens: int, model_spec, cache_dir) -> dict:
    """HF `generate` on the same prompts, `concurrency` prompts per batch, greedy."""
    import torch

    from adapters.model import load_model

    lm = load_model(model_spec, cache_dir)
    tok = lm.tokenizer
    tok.padding_side = "left"
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
    tokens = 0
    start = time.perf_counter()
    for i in range(0, len(prompts), concurrency):
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                 for p in prompts[i:i + concurrency]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(lm.device)
        with torch.no_grad():
            out = lm.model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        # Count up to and including the first end token, as the server's usage does (minus it).
        for row in new.tolist():
            n = next((k for k, t in enumerate(row) if t == tok.eos_token_id), len(row))
            tokens += n
    wall = time.perf_counter() - start
    return {"concurrency": concurrency, "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


def machine_facts() -> dict:
    import os

    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def levels(url: str, args, model: str | None = None) -> list[dict]:
    asyncio.run(run_level(url, 1, 1, 8, model))  # warm-up
    return [asyncio.run(run_level(url, c, max(args.requests, c), args.max_tokens, model)) for c in args.concurrency]


def side_by_side(args) -> None:
    """vLLM direct, Refinery in front of the same vLLM, and the embedded engine, one at a time."""
    from adapters.model import convert_embedded
    from tests.fixtures.server import LiveServer
    from tests.fixtures.vllm import SERVED_NAME, VLLMServer, vllm_python

    if vllm_python() is None:
        sys.exit("no vLLM environment: bash scripts/install.sh --test makes it")
    cache = Path(args.model_cache)
    model_dir = convert_embedded(cache)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    results: dict[str, list[dict]] = {}
    vllm = VLLMServer(model_dir, work).start().wait()
    try:
        results["vllm_direct"] = levels(vllm.url, args, SERVED_NAME)
        env = {"REFINERY_ENGINE": "vllm", "REFINERY_ENGINE_URLS": vllm.url, "REFINERY_BACKGROUND_ANALYSIS": "false",
               "REFINERY_RUN_JOBS": "false", "REFINERY_MAX_TOKENS_LIMIT": str(max(1024, args.max_tokens))}
        front = LiveServer(work / "refinery-vllm", cache, model=str(model_dir), env=env)
        front.data_dir.mkdir()
        front.start(timeout=300)
        try:
            results["refinery_vllm"] = levels(front.url, args)
        finally:
            front.stop()
    finally:
        vllm.stop()
    embedded = LiveServer(work / "refinery-embedded", cache, env={"REFINERY_BACKGROUND_ANALYSIS": "false",
                                                                  "REFINERY_RUN_JOBS": "false"})
    embedded.data_dir.mkdir()
    embedded.start()
    try:
        results["refinery_embedded"] = levels(embedded.url, args)
    finally:
        embedded.stop()

    machine = machine_facts()
    print(f"\nmachine: {machine}")
    print(f"{'clients':>7} {'vLLM tok/s':>10} {'Refinery+vLLM tok/s':>19} {'ratio':>6} {'vLLM TTFT p50':>13} "
          f"{'added TTFT p50 ms':>17} {'embedded tok/s':>14} {'embedded TTFT p50':>17}")
    rows = []
    for d, f, e in zip(results["vllm_direct"], results["refinery_vllm"], results["refinery_embedded"]):
        row = {"concurrency": d["concurrency"], "vllm_direct": d, "refinery_vllm": f, "refinery_embedded": e,
               "ratio": f["tokens_per_s"] / d["tokens_per_s"], "added_ttft_p50_ms": (f["ttft_p50_s"] - d["ttft_p50_s"]) * 1000}
        rows.append(row)
        print(f"{d['concurrency']:>7} {d['tokens_per_s']:>10.1f} {f['tokens_per_s']:>19.1f} {row['ratio']:>6.2f} "
              f"{d['ttft_p50_s']:>13.3f} {row['added_ttft_p50_ms']:>17.1f} {e['tokens_per_s']:>14.1f} {e['ttft_p50_s']:>17.3f}")
    out = Path(args.out).with_name("serve-side-by-side.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "max_tokens": args.max_tokens, "rows": rows}, indent=2))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="A running server; default: start one with the embedded model.")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--requests", type=int, default=8, help="Requests per concurrency level.")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", default=None, help="Model for the in-process baseline (default embedded).")
    ap.add_argument("--model-cache", default=str(ROOT / ".cache" / "models"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve.json"))
    ap.add_argument("--side-by-side", action="store_true", help="vLLM direct, Refinery in front of vLLM, embedded.")
    args = ap.parse_args()
    if args.side_by_side:
        return side_by_side(args)

    server = None
    url = args.url
    if url is None:
        from tests.fixtures.server import LiveServer

        server = LiveServer(Path(tempfile.mkdtemp(prefix="bench-serve-")), Path(args.model_cache), args.model).start()
        url = server.url
    try:
        served = levels(url, args)
    finally:
        if server:
            server.stop()
    local = [in_process(c, max(args.requests, c), args.max_tokens, args.model, Path(args.model_cache))
             for c in args.concurrency]

    machine = machine_facts()
    print(f"\nmachine: {machine}")
    print(f"{'clients':>7} {'requests':>8} {'service tok/s':>13} {'in-process tok/s':>16} {'ratio':>6} "
          f"{'TTFT p50 s':>10} {'TTFT p95 s':>10}")
    rows = []
    for s, l in zip(served, local):
        ratio = s["tokens_per_s"] / l["tokens_per_s"] if l["tokens_per_s"] else float("nan")
        rows.append({"service": s, "in_process": l, "ratio": ratio})
        print(f"{s['concurrency']:>7} {s['requests']:>8} {s['tokens_per_s']:>13.1f} {l['tokens_per_s']:>16.1f} "
              f"{ratio:>6.2f} {s['ttft_p50_s']:>10.3f} {s['ttft_p95_s']:>10.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "max_tokens": args.max_tokens, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
