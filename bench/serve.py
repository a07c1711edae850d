"""Serving benchmark: tokens/s and time-to-first-token at 1, 4 and 8 concurrent streaming
clients against a live server, next to `generate` called in-process on the same model and
prompts (their ratio is what the service costs).

    python bench/serve.py                      # starts its own server with the embedded model
    python bench/serve.py --url http://127.0.0.1:8000 --concurrency 1 4 8 --requests 8

Prints a table and writes bench/results/serve.json.
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


async def one_request(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int) -> dict:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
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


async def run_level(url: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    queue = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
    results = []

    async def worker(client):
        while queue:
            results.append(await one_request(client, url, queue.pop(), max_tokens))

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="A running server; default: start one with the embedded model.")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--requests", type=int, default=8, help="Requests per concurrency level.")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", default=None, help="Model for the in-process baseline (default embedded).")
    ap.add_argument("--model-cache", default=str(ROOT / ".cache" / "models"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve.json"))
    args = ap.parse_args()

    server = None
    url = args.url
    if url is None:
        from tests.fixtures.server import LiveServer

        server = LiveServer(Path(tempfile.mkdtemp(prefix="bench-serve-")), Path(args.model_cache), args.model).start()
        url = server.url
    try:
        asyncio.run(run_level(url, 1, 1, 8))  # warm-up
        served = [asyncio.run(run_level(url, c, max(args.requests, c), args.max_tokens)) for c in args.concurrency]
    finally:
        if server:
            server.stop()
    local = [in_process(c, max(args.requests, c), args.max_tokens, args.model, Path(args.model_cache))
             for c in args.concurrency]

    import torch

    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpus": __import__("os").cpu_count(), "torch": torch.__version__,
               "device": "cuda" if torch.cuda.is_available() else "cpu"}
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
