"""Does an approved in-context principle reach the requests of its domain, and only those?

    python bench/scope.py                      # the dev split (the scope model was tuned on it)
    python bench/scope.py --split test         # scored once, then tuned on (the named-person scope)
    python bench/scope.py --split final        # the held-out split: run once, report as it is

For each principle of bench/data/scope_<split>.jsonl (a domain, and 20 in-scope, 20 near-scope
and 20 unrelated requests written by hand before any matcher was tuned), the share of requests
each matcher applies the principle to: the lexical matcher (word overlap, the default before
the encoder) and the scope model on the sentence encoder (policies.scope_model, what the
service uses). In scope it should be high, near scope and out of scope low.

Also the request path's cost: the time `ScopeMatcher.applicable` adds to a request with three
approved in-context principles, over requests never seen before (no vector cached), p50 / p95.
Prints tables; writes bench/results/scope-<split>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.corpus import load_corpus  # noqa: E402
from policies.encoder import load_encoder  # noqa: E402
from policies.scope import ScopeMatcher  # noqa: E402
from policies.scope_model import ScopeModels  # noqa: E402

SCOPES = ("in_scope", "near_scope", "out_of_scope")


def rates(matcher: ScopeMatcher, p: dict) -> dict[str, float]:
    return {s: sum(matcher.in_scope(p["domain"], q) for q in p[s]) / len(p[s]) for s in SCOPES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("dev", "test", "final"), default="dev")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "models")
    ap.add_argument("--encoder", default=None, help="a local sentence-transformers directory (default: embedded)")
    args = ap.parse_args()

    principles = [json.loads(line) for line in (ROOT / "bench" / "data" / f"scope_{args.split}.jsonl").read_text().splitlines()
                  if line.strip()]
    t0 = time.perf_counter()
    encoder = load_encoder(args.encoder, args.cache)
    models = ScopeModels(encoder, load_corpus(encoder))
    semantic = ScopeMatcher(scorer=models.score)
    lexical = ScopeMatcher()
    for p in principles:
        models.model(p["domain"])  # fitted before timing: the service fits once per domain
    setup = time.perf_counter() - t0

    rows = []
    for p in principles:
        m = models.model(p["domain"])
        rows.append({"id": p["id"], "kind": p["kind"], "domain": p["domain"], "topics": m.topics,
                     "lexical": rates(lexical, p), "encoder": rates(semantic, p)})
    print(f"\nscope, split {args.split} ({len(rows)} principles): share of requests the principle is applied to")
    print(f"{'principle':<26} {'kind':<9} {'lexical in/near/out':>20} {'encoder in/near/out':>20}  topics")
    fmt = lambda r: "/".join(f"{r[s]:.2f}" for s in SCOPES)  # noqa: E731
    for r in rows:
        print(f"{r['id']:<26} {r['kind']:<9} {fmt(r['lexical']):>20} {fmt(r['encoder']):>20}  {', '.join(r['topics'])}")
    mean = {k: {s: statistics.mean(r[k][s] for r in rows) for s in SCOPES} for k in ("lexical", "encoder")}
    print(f"{'mean':<36} {fmt(mean['lexical']):>20} {fmt(mean['encoder']):>20}")
    by_kind = {}
    for kind in sorted({r["kind"] for r in rows}):
        sub = [r for r in rows if r["kind"] == kind]
        by_kind[kind] = {k: {s: statistics.mean(r[k][s] for r in sub) for s in SCOPES} for k in ("lexical", "encoder")}
        print(f"{'mean ' + kind:<36} {fmt(by_kind[kind]['lexical']):>20} {fmt(by_kind[kind]['encoder']):>20}")

    # Request-path cost: three principles, requests never embedded before.
    chosen = [{"domain": p["domain"]} for p in principles[:3]]
    requests = [f"{q} (request {i})" for i, q in enumerate(q for p in principles for q in p["out_of_scope"])][:200]
    timings = {}
    for name, matcher in (("lexical", lexical), ("encoder", semantic)):
        ms = []
        for q in requests:
            t = time.perf_counter()
            matcher.applicable(chosen, [{"role": "user", "content": q}])
            ms.append((time.perf_counter() - t) * 1000)
        ms.sort()
        timings[name] = {"p50_ms": statistics.median(ms), "p95_ms": ms[int(0.95 * len(ms)) - 1], "requests": len(ms)}
    print("\nadded per request, 3 approved in-context principles, uncached requests:")
    for name, t in timings.items():
        print(f"  {name:<8} p50 {t['p50_ms']:.2f} ms  p95 {t['p95_ms']:.2f} ms")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    out = ROOT / "bench" / "results" / f"scope-{args.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"split": args.split, "encoder": encoder.name, "setup_seconds": round(setup, 1),
                               "principles": rows, "mean": mean, "by_kind": by_kind, "request_path": timings,
                               "machine": {"cpu": cpu, "platform": platform.platform()}}, indent=1))
    print(f"machine: {cpu}; setup (encoder, corpus vectors, {len(rows)} scope models) {setup:.1f} s; wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
