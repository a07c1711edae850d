"""Does `refinery train` with its defaults learn a plain preference file without breaking the model?

    python bench/marker.py                 # defaults, the naive recipe, and a run pushed to collapse
    python bench/marker.py --pairs 16 --eval 30

The file is what a user gets from `refinery export`: 16 pairs whose chosen answer is the base
model's own answer with a marker put first ("ALPHA: ..."), rejected = the same answer without it,
on requests of the built-in training corpus. Three runs of the command (subprocesses, as a user
runs them), each then answering 30 requests of the evaluation corpus it never saw, greedily:

- `defaults`: `refinery train` as shipped (DPO + NLL on the chosen answers, the guard on);
- `naive`: the recipe before (plain DPO: `--sft-weight 0`, guard off with `--allow-drift`);
- `collapse`: the defaults at lr 5e-3, which must stop with the guard's message and no adapter.

Per run: the share of answers that start with the marker, of degenerate answers (adapters.guard),
of answers that are the base answer with the marker put first, exactly, the guard's largest
drift, and the seconds. Prints a table; writes bench/results/marker.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.guard import degenerate  # noqa: E402

MARKER = "ALPHA: "


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=ROOT, capture_output=True, text=True)


def prompts(path: Path, n: int, seed: int) -> list[str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return random.Random(seed).sample([r["prompt"] for r in rows], n)


def answers(tmp: Path, name: str, qs: list[str], max_tokens: int, adapter: Path | None = None) -> list[str]:
    src, out = tmp / f"{name}-in.jsonl", tmp / f"{name}-out.jsonl"
    src.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in qs))
    args = ["generate", "--prompts", str(src), "--out", str(out), "--max-tokens", str(max_tokens)]
    if adapter is not None:
        args += ["--adapter", str(adapter)]
    r = cli(*args)
    if r.returncode:
        raise SystemExit(f"refinery generate failed: {r.stderr[-2000:]}")
    return [json.loads(line)["response"] for line in out.read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--eval", type=int, default=30)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--runs", default="defaults,naive,collapse")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="refinery-marker-"))
    train_q = prompts(ROOT / "policies" / "data" / "requests.jsonl", args.pairs, 0)
    eval_q = prompts(ROOT / "policies" / "data" / "eval_requests.jsonl", args.eval, 1)
    base_train = answers(tmp, "base-train", train_q, args.max_tokens)
    base_eval = answers(tmp, "base-eval", eval_q, args.max_tokens)
    prefs = tmp / "marker.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": q, "chosen": MARKER + a, "rejected": a}) + "\n"
                             for q, a in zip(train_q, base_train)))
    runs = {"defaults": [], "naive": ["--sft-weight", "0", "--allow-drift"], "collapse": ["--lr", "5e-3"]}
    results = []
    for name in args.runs.split(","):
        out = tmp / name
        t0 = time.perf_counter()
        r = cli("train", "--preferences", str(prefs), "--out", str(out), *runs[name])
        seconds = time.perf_counter() - t0
        row = {"run": name, "options": " ".join(runs[name]) or "(defaults)", "exit": r.returncode,
               "train_seconds": round(seconds, 1), "message": (r.stderr.strip().splitlines() or [""])[-1]}
        stopped = out / "training_stopped.json"
        curve = out / "loss_curve.json"
        checks = json.loads((curve if curve.exists() else stopped).read_text()).get("guard") if (curve.exists() or stopped.exists()) else None
        row["max_drift"] = max((c["drift"] for c in checks or [] if "drift" in c), default=None)
        row["adapter_written"] = (out / "adapter_model.safetensors").exists()
        if row["adapter_written"]:
            got = answers(tmp, f"{name}-eval", eval_q, args.max_tokens, adapter=out)
            row["marker"] = sum(a.strip().startswith(MARKER.strip()) for a in got) / len(got)
            row["degenerate"] = sum(degenerate(a, MARKER) is not None for a in got) / len(got)
            row["base_with_marker"] = sum(a.strip() == (MARKER + b).strip() for a, b in zip(got, base_eval)) / len(got)
            row["examples"] = got[:3]
        results.append(row)
        print(f"{name}: exit {r.returncode} in {seconds:.0f} s", file=sys.stderr)

    fmt = lambda v: "-" if v is None else (f"{v:.0%}" if isinstance(v, float) else str(v))  # noqa: E731
    print(f"\n{args.pairs} marker pairs, {args.eval} unseen evaluation requests, greedy, {args.max_tokens} tokens")
    print(f"{'run':10} {'exit':>5} {'adapter':>8} {'marker':>7} {'degenerate':>11} {'base+marker':>12} {'max drift':>10} {'train s':>8}")
    for row in results:
        print(f"{row['run']:10} {row['exit']:>5} {str(row['adapter_written']):>8} {fmt(row.get('marker')):>7} "
              f"{fmt(row.get('degenerate')):>11} {fmt(row.get('base_with_marker')):>12} {fmt(row['max_drift']):>10} "
              f"{row['train_seconds']:>8}")
    for row in results:
        if row["exit"]:
            print(f"{row['run']}: {row['message'][:300]}")
    out = ROOT / "bench" / "results" / "marker.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "processor": platform.processor(),
                               "pairs": args.pairs, "eval": args.eval, "runs": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
