"""Does the refinement job learn users' corrections, and leave everything else as it was?

    python bench/corrections.py                  # the train corrections, through the API, then refine
    python bench/corrections.py --split test     # the second round (do not tune on it)

bench/data/corrections.jsonl was written before the corrections recipe existed: factual
corrections (public facts a 135M model gets wrong, and facts of made-up organisations no model
can know), each with three paraphrases of its request and two near questions on the same
surface, and 60 unrelated requests. Through the public interfaces only, on a fresh data
directory with the embedded model and no teacher:

1. `refinery serve`; each corrected request is asked (POST /v1/chat/completions) and its answer
   corrected (POST /v1/feedback with `correction`), as a user of the API would;
2. `refinery refine` (the job's recipe; its corrections report is read as written);
3. `refinery generate`, base and with the candidate adapter, on the corrected requests, their
   paraphrases (never trained on), the near questions and the unrelated requests (the first 30
   for the train split, the other 30 for the test split): the candidate as the server answers
   (the base weights outside the version's scope.json, policies.adapter_scope), and with the
   adapter on every request (`--everywhere`).

Per set: the share of answers that contain the corrected fact (base, candidate), and of the
candidate's answers identical to the base model's (greedy). Prints a table; writes
bench/results/corrections-<split>.json.
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

DATA = ROOT / "bench" / "data" / "corrections.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("train", "test"), default="train")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--unrelated", type=int, default=30)
    ap.add_argument("--params", default=None, help="refinery refine --params (JSON)")
    args = ap.parse_args()
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    facts = [r for r in rows if r["kind"] == "correction" and r["split"] == args.split]
    unrelated = [r["request"] for r in rows if r["kind"] == "unrelated"]
    # the first half for the train split, the second for the test split: neither sees the other's
    half = len(unrelated) // 2
    unrelated = (unrelated[:half] if args.split == "train" else unrelated[half:])[: args.unrelated]

    tmp = Path(tempfile.mkdtemp(prefix="refinery-corrections-"))
    env = environment(tmp / "data")
    t0 = time.perf_counter()
    with serving(env) as url:
        served = []
        for r in facts:
            ans = httpx.post(url + "/v1/chat/completions", timeout=300,
                             json={"messages": [{"role": "user", "content": r["request"]}],
                                   "max_tokens": args.max_tokens, "temperature": 0}).json()
            fb = httpx.post(url + "/v1/feedback", timeout=60, json={"completion_id": ans["id"], "thumb": "down",
                                                                     "comment": r["comment"], "correction": r["correction"]})
            fb.raise_for_status()
            served.append(ans["choices"][0]["message"]["content"])
    refine = cli(env, "refine", "--no-progress", *(["--params", args.params] if args.params else []))
    refine_s = time.perf_counter() - t0
    if refine.returncode:
        raise SystemExit(f"refinery refine failed: {refine.stderr[-3000:]}\n{refine.stdout[-2000:]}")
    jobs = sorted((tmp / "data" / "jobs").iterdir())
    [report_path] = list(jobs[-1].glob("reports/*/corrections/report.json"))
    job_report = json.loads(report_path.read_text())
    [adapter] = [p for p in jobs[-1].glob("adapter-*") if (p / "adapter_config.json").exists()]

    sets = {"corrected requests": [(r["request"], r["fact"]) for r in facts],
            "paraphrases (unseen)": [(q, r["fact"]) for r in facts for q in r["paraphrases"]],
            "near questions": [(q, r["fact"]) for r in facts for q in r["near"]],
            "unrelated requests": [(q, None) for q in unrelated]}
    results = {}
    for name, items in sets.items():
        prompts = [q for q, _ in items]
        base = [r["response"] for r in generate(env, tmp, f"base-{len(results)}", prompts, None, args.max_tokens)]
        served = generate(env, tmp, f"cand-{len(results)}", prompts, adapter, args.max_tokens)
        cand = [r["response"] for r in served]
        alone = [r["response"] for r in generate(env, tmp, f"alone-{len(results)}", prompts, adapter, args.max_tokens,
                                                 everywhere=True)]
        has = lambda answers: sum(f is not None and f.lower() in a.lower() for a, (_, f) in zip(answers, items)) / len(items)  # noqa: E731
        same = lambda answers: sum(a.strip() == b.strip() for a, b in zip(answers, base)) / len(items)  # noqa: E731
        results[name] = {"n": len(items), "fact_base": has(base), "fact_candidate": has(cand),
                         "identical_to_base": same(cand), "adapter_applied": sum(r.get("adapter_applied", True) for r in served) / len(items),
                         "fact_adapter_everywhere": has(alone), "identical_adapter_everywhere": same(alone),
                         "examples": [{"prompt": q, "base": b, "candidate": c, "adapter_everywhere": a}
                                      for (q, _), b, c, a in list(zip(items, base, cand, alone))[:4]]}

    print(f"\n{len(facts)} corrections ({args.split}), embedded model, no teacher; job wall time {refine_s:.0f} s")
    print("candidate as served (the base weights outside the version's scope), and with the adapter on every request")
    print(f"{'set':24} {'n':>4} {'fact: base':>11} {'fact: candidate':>16} {'identical to base':>18} {'adapter on':>11} "
          f"{'fact: everywhere':>17} {'identical: everywhere':>22}")
    for name, r in results.items():
        print(f"{name:24} {r['n']:>4} {r['fact_base']:>11.0%} {r['fact_candidate']:>16.0%} {r['identical_to_base']:>18.0%} "
              f"{r['adapter_applied']:>11.0%} {r['fact_adapter_everywhere']:>17.0%} {r['identical_adapter_everywhere']:>22.0%}")
    sc = job_report["scopes"]
    print(f"\nthe job's own report: adoption {job_report['adoption']}, identical near {sc['near_scope']['identical']} "
          f"(adapter everywhere {sc['near_scope'].get('identical_adapter')}), out {sc['out_of_scope']['identical']} "
          f"(adapter everywhere {sc['out_of_scope'].get('identical_adapter')}); "
          f"gate {'passed' if job_report['gate']['passed'] else 'failed'}")
    for reason in job_report["gate"]["reasons"]:
        print("  " + reason)
    out = ROOT / "bench" / "results" / f"corrections-{args.split}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "split": args.split,
                               "job_seconds": round(refine_s, 1), "sets": results, "job_report_gate": job_report["gate"],
                               "job_report": {"adoption": job_report["adoption"], "base_adoption": job_report["base_adoption"],
                                              **{k: {f: v.get(f) for f in ("n", "identical", "identical_adapter", "adapter_applied")}
                                                 for k, v in sc.items()}},
                               "served_answers": served}, indent=1, ensure_ascii=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
