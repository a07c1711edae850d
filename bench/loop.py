"""The whole loop, judged on real requests: rules given as user comments become a candidate adapter
that applies them where they belong and nowhere else?

    python bench/loop.py                                      # astronomy and landlord emails (scope test split)
    python bench/loop.py --split final --rules geology,sister_priya_texts

For each chosen principle of bench/data/scope_<split>.jsonl (a rule with a start-of-answer check,
and 20 in-scope, 20 near-scope and 20 unrelated requests written by hand), through the public
interfaces only, on a fresh data directory with the embedded model and no teacher:

1. `refinery serve`; the first in-scope request is asked (POST /v1/chat/completions) and the rule
   given as the user's comment on the answer (POST /v1/feedback); POST /admin/analyse proposes
   the principle, which `refinery principles approve --mode adapter` approves as it was proposed;
2. `refinery refine` (the job's own recipe and gate; its report is read as written);
3. `refinery generate`, base, candidate as served (its adapter inside the version's scope, the
   base weights elsewhere) and the adapter on every request (`--everywhere`), on the other 19
   in-scope requests, the near-scope and the unrelated ones: none of them is in the job's
   training or evaluation prompts (those come from the built-in corpora).

Per principle and set: the share of answers that pass the rule's check, and of requests the
adapter answered as served. Prints a table; writes
bench/results/loop-<split>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, cli, environment, generate, serving  # noqa: E402

sys.path.insert(0, str(ROOT))
from policies.checks import passes_all  # noqa: E402

SETS = ("in_scope", "near_scope", "out_of_scope")
ADMIN_KEY = "bench-admin"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("dev", "test", "final"), default="test")
    ap.add_argument("--rules", default="astronomy,landlord_okafor_emails", help="principle ids of the split, comma-separated")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--params", default=None, help="refinery refine --params (JSON)")
    args = ap.parse_args()
    rows = {r["id"]: r for r in map(json.loads, (ROOT / "bench" / "data" / f"scope_{args.split}.jsonl").read_text().splitlines())}
    chosen = [rows[i] for i in args.rules.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="refinery-loop-"))
    env = environment(tmp / "data", REFINERY_ADMIN_KEY=ADMIN_KEY, REFINERY_RUN_JOBS="false")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    t0 = time.perf_counter()
    with serving(env) as url:
        for r in chosen:
            ans = httpx.post(url + "/v1/chat/completions", timeout=300,
                             json={"messages": [{"role": "user", "content": r["in_scope"][0]}], "max_tokens": 40}).json()
            httpx.post(url + "/v1/feedback", timeout=60,
                       json={"completion_id": ans["id"], "thumb": "down", "comment": r["text"]}).raise_for_status()
        httpx.post(url + "/admin/analyse", headers=admin, timeout=600).raise_for_status()
        proposed = httpx.get(url + "/admin/principles", params={"status": "candidate"}, headers=admin, timeout=60).json()["data"]
    print(f"{len(proposed)} principles proposed:")
    for p in proposed:
        print(f"  {p['id']}: {p['text']!r} domain {p['domain']!r} checks {p['checks']}")
        r = cli(env, "principles", "approve", p["id"], "--mode", "adapter", "--actor", "bench")
        if r.returncode:
            raise SystemExit(f"approve failed: {r.stderr[-2000:]}")
    refine = cli(env, "refine", "--no-progress", *(["--params", args.params] if args.params else []))
    refine_s = time.perf_counter() - t0
    if refine.returncode:
        raise SystemExit(f"refinery refine failed: {refine.stderr[-3000:]}\n{refine.stdout[-2000:]}")
    text = refine.stdout
    result = json.loads(text[text.index("\n{") + 1:] if not text.startswith("{") else text)
    reports = {pid: json.loads(Path(path).with_name("report.json").read_text()) for pid, path in result.get("reports", {}).items()}
    jobs = sorted((tmp / "data" / "jobs").iterdir())
    adapters = [p for p in jobs[-1].glob("adapter-*") if (p / "adapter_config.json").exists()]
    if not adapters:
        raise SystemExit(f"the job registered no adapter: {json.dumps(result)[:2000]}")
    adapter = adapters[0]

    table = {}
    for r in chosen:
        sets = {"in_scope": r["in_scope"][1:], "near_scope": r["near_scope"], "out_of_scope": r["out_of_scope"]}
        table[r["id"]] = {}
        for name, prompts in sets.items():
            base = generate(env, tmp, f"{r['id']}-{name}-base", prompts, None, args.max_tokens)
            cand = generate(env, tmp, f"{r['id']}-{name}-cand", prompts, adapter, args.max_tokens)
            alone = generate(env, tmp, f"{r['id']}-{name}-alone", prompts, adapter, args.max_tokens, everywhere=True)
            rate = lambda rows_: sum(passes_all(r["checks"], x["response"]) for x in rows_) / len(rows_)  # noqa: E731
            table[r["id"]][name] = {"n": len(prompts), "base": rate(base), "candidate": rate(cand),
                                    "adapter_applied": sum(x.get("adapter_applied", True) for x in cand) / len(cand),
                                    "adapter_everywhere": rate(alone),
                                    "examples": [{"prompt": q, "candidate": c["response"], "adapter_everywhere": a["response"]}
                                                 for q, c, a in zip(prompts, cand, alone)][:3]}

    print(f"\nsplit {args.split}, rules {args.rules}; embedded model, no teacher; loop wall time {refine_s:.0f} s; "
          f"job: gate {'passed' if result.get('gate_passed') else 'failed'}, action {result.get('action')}")
    print("share of answers passing the rule's check: base / candidate as served (adapter applied) / adapter everywhere")
    print(f"{'principle':<28} " + " ".join(f"{s:>30}" for s in SETS))
    for pid, t in table.items():
        print(f"{pid:<28} " + " ".join(f"{t[s]['base']:>7.0%} /{t[s]['candidate']:>5.0%} ({t[s]['adapter_applied']:>4.0%}) /{t[s]['adapter_everywhere']:>5.0%}"
                                        for s in SETS))
    for pid, rep in reports.items():
        print(f"job report {pid}: gate {json.dumps(rep.get('gate'))[:800]}")
    out = ROOT / "bench" / "results" / f"loop-{args.split}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "split": args.split,
                               "rules": args.rules, "seconds": round(refine_s, 1), "proposed": proposed,
                               "job": {k: result.get(k) for k in ("version", "gate_passed", "action")},
                               "reports": reports, "table": table}, indent=1, ensure_ascii=False, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
