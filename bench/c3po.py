"""C3PO's comparison, reproduced in shape: base, in-context, DPO-only and C3PO (DPO + constraint NLL)
on feedbacks with programmatic checks; in-scope adherence, near-scope and out-of-scope
overgeneralisation (and out-of-scope drift) for each.

    python bench/c3po.py --config small                    # CPU, the embedded model, < 30 minutes
    python bench/c3po.py --config small --recipe refinery  # the refinement job's recipe instead of the paper's
    python bench/c3po.py --config large                    # a GPU: more prompts, every feedback
    python bench/c3po.py --feedback-ids own-garden,c3po-008 --n-train 10 --n-test 5
    python bench/c3po.py --teacher langchain_openai.ChatOpenAI --teacher-arg model=gpt-4o-mini \\
        --teacher-arg base_url=http://host:8000/v1       # the teacher writes prompts and revisions

Feedbacks: our own (bench/data/c3po_own.jsonl, hand-written in/near prompt sets) and the
quantitative ones of ../shared/eval/c3po_feedback.jsonl (prompts from the template generator of
policies.synthesis.templates, as no capable teacher is here; a --teacher writes them instead).
Out-of-scope prompts come from the built-in general pool. Training and test prompts are
disjoint: each set is split before anything is generated.

Per feedback, through the refinement job's own pipeline (service.distill: build_dataset,
train_adapter, evaluate) with the chosen recipe: synthesis (baselines, model revisions,
verification) on the training prompts -> two adapters from the same rows, DPO only and DPO + NLL
constraints -> evaluation of base / in-context / both adapters on the test prompts (checks of the
feedback) -> the promotion gate on C3PO's row.
Prints a table per feedback and overall, the training throughput and the machine; writes
bench/results/c3po.json, bench/results/c3po.png, and per feedback a report directory with the
adapters under bench/results/c3po/ (all gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.checks import format_check  # noqa: E402
from policies.principles import Principle  # noqa: E402
from policies.synthesis import PromptSets, SynthesisConfig, build_prompt_sets  # noqa: E402
from service.distill import Recipe, build_dataset, evaluate, train_adapter  # noqa: E402

OWN = ROOT / "bench" / "data" / "c3po_own.jsonl"
PAPER = ROOT.parent / "shared" / "eval" / "c3po_feedback.jsonl"
RESULTS = ROOT / "bench" / "results"
CONDITIONS = [("base", "base"), ("in_context", "in-context"), ("dpo", "DPO only"), ("c3po", "C3PO")]

CONFIGS = {
    # 3 feedbacks x (60 baselines + 20 revisions + 2 trainings + 4 x 30 test answers) on 2 CPU cores.
    "small": {"feedbacks": ["own-garden", "own-filler", "c3po-080"], "n_train": 20, "n_test": 10,
              "max_new_tokens": 48, "batch_size": 16},
    # Every feedback with checks, more prompts and longer answers: for a GPU.
    "large": {"feedbacks": "all", "n_train": 60, "n_test": 30, "max_new_tokens": 96, "batch_size": 32},
}


def load_feedbacks(ids: list[str] | str) -> list[dict]:
    own = [json.loads(line) for line in OWN.read_text().splitlines() if line.strip()]
    paper = [json.loads(line) for line in PAPER.read_text().splitlines() if line.strip()] if PAPER.exists() else []
    usable = [f for f in own + paper if f.get("checks")]
    if ids == "all":
        return usable
    by_id = {f["id"]: f for f in usable}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise SystemExit(f"unknown feedback ids (or without checks): {', '.join(missing)}; "
                         f"known: {', '.join(by_id)}")
    return [by_id[i] for i in ids]


def to_principle(fb: dict) -> Principle:
    return Principle(text=fb["content"], domain=fb["domain"], effect=fb["effect"], source="critique",
                     checks=[format_check(c) for c in fb["checks"]])


def split_sets(fb: dict, principle: Principle, teacher, n_train: int, n_test: int, seed: int,
               n_constraint: int | None = None) -> tuple[PromptSets, PromptSets]:
    """Disjoint training and test prompt sets. Own feedbacks test on their hand-written prompts
    (the last n_test) and train on the rest, topped up with generated ones when short.
    `n_constraint`: training prompts for the near- and out-of-scope sets (default n_train)."""
    n_con = n_constraint or n_train
    gen = build_prompt_sets(principle, teacher, [], SynthesisConfig(n_in_scope=n_train + n_test,
                                                                    n_near_scope=n_con + n_test,
                                                                    n_out_of_scope=n_con + n_test, seed=seed))
    sets = {"in_scope": list(gen.in_scope), "near_scope": list(gen.near_scope), "out_of_scope": list(gen.out_of_scope)}
    train, test = {}, {}
    for scope, prompts in sets.items():
        k = n_train if scope == "in_scope" else n_con
        own = fb.get("prompts", {}).get(scope)
        if own:
            test[scope] = own[-n_test:]
            rest = own[:-n_test]
            train[scope] = (rest + [p for p in prompts if p not in own])[:k]
        else:
            train[scope], test[scope] = prompts[:k], prompts[k:k + n_test]
    meta = dict(categories=gen.categories, generator=gen.generator, failures=gen.failures)
    return PromptSets(**train, **meta), PromptSets(**test, **meta)


def machine_info(torch) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def fmt(x) -> str:
    return "  –  " if x is None else f"{x:5.2f}"


def print_table(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"  {'condition':<11} {'adherence':>9} {'near':>6} {'out':>6} {'out drift':>9}")
    for key, label in CONDITIONS:
        r = rows.get(key)
        if r is not None:
            print(f"  {label:<11} {fmt(r['adherence']):>9} {fmt(r['near_scope']):>6} {fmt(r['out_of_scope']):>6} "
                  f"{fmt(r['out_edit_distance']):>9}")


def plot(results: list[dict], overall: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(r["id"], r["table"]) for r in results] + [("overall (mean)", overall)]
    fig = Figure(figsize=(4.2 * len(panels), 3.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    width = 0.26
    for ax, (title, table) in zip(axes, panels):
        conds = [(k, label) for k, label in CONDITIONS if k in table]
        for j, (metric, label) in enumerate((("adherence", "in-scope adherence"), ("near_scope", "near-scope"),
                                             ("out_of_scope", "out-of-scope"))):
            vals = [table[k][metric] or 0.0 for k, _ in conds]
            ax.bar([i + (j - 1) * width for i in range(len(conds))], vals, width, label=label)
        ax.set_xticks(range(len(conds)), [label for _, label in conds], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("share of answers showing the effect")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small")
    ap.add_argument("--feedback-ids", help="comma-separated ids (own-* and c3po-*), or 'all'; default: the config's")
    ap.add_argument("--n-train", type=int, help="training prompts per scope (default: the config's)")
    ap.add_argument("--n-constraint", type=int, help="near- and out-of-scope training prompts (default: n-train)")
    ap.add_argument("--recipe", choices=["paper", "refinery"], default="paper",
                    help="paper: C3PO's NLL weights 0.1/0.2 per token, model revisions; refinery: the refinement "
                         "job's (service.distill.RECIPE: minimal edits, summed NLL 0.03/0.06, 40+40 rows)")
    ap.add_argument("--n-test", type=int, help="test prompts per scope (default: the config's)")
    ap.add_argument("--max-tokens", type=int, help="new tokens per answer (default: the config's)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--epochs", type=int, help="training epochs (default: adapters.train's)")
    ap.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "models"))
    ap.add_argument("--teacher", help="dotted LangChain chat model class for prompts, revisions and judging")
    ap.add_argument("--teacher-arg", action="append", default=[], metavar="K=V")
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="torch CPU threads (1 when other work shares 2 cores: contention makes torch ~20x slower)")
    ap.add_argument("--prefer-minimal-edit", action="store_true",
                    help="chosen = the repaired baseline wherever the checks can repair it (SynthesisConfig)")
    ap.add_argument("--contrast-near", action="store_true",
                    help="near-scope prompts also give pairs: baseline over baseline with the rule (SynthesisConfig)")
    ap.add_argument("--near-weight", type=float, help="NLL weight of near-scope rows (default: SynthesisConfig's)")
    ap.add_argument("--out-weight", type=float, help="NLL weight of out-of-scope rows (default: SynthesisConfig's)")
    ap.add_argument("--constraint-reduction", choices=["mean", "sum"], help="default: TrainConfig's")
    ap.add_argument("--lr", type=float, help="learning rate (default: TrainConfig's)")
    ap.add_argument("--beta", type=float, help="DPO beta (default: TrainConfig's)")
    ap.add_argument("--skip-dpo", action="store_true", help="train the C3PO adapter only (faster sweeps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "c3po.json"))
    args = ap.parse_args(argv)
    if args.recipe == "refinery":
        from service.distill import RECIPE

        syn, tr = RECIPE["synthesis"], RECIPE["train"]
        args.prefer_minimal_edit = args.prefer_minimal_edit or syn.get("prefer_minimal_edit", False)
        args.contrast_near = args.contrast_near or syn.get("contrast_near", False)
        for key in ("near_weight", "out_weight", "constraint_reduction"):
            if getattr(args, key) is None:
                setattr(args, key, syn.get(key, tr.get(key)))
        if args.n_constraint is None:
            args.n_constraint = syn["n_near_scope"]

    import torch

    torch.set_num_threads(args.threads)
    from adapters.generate import generate
    from adapters.model import load_model
    from adapters.train_config import TrainConfig
    from policies.teacher import build_teacher

    cfg = dict(CONFIGS[args.config])
    for key in ("n_train", "n_test", "max_new_tokens", "batch_size"):
        value = getattr(args, "max_tokens" if key == "max_new_tokens" else key)
        if value is not None:
            cfg[key] = value
    if args.feedback_ids:
        cfg["feedbacks"] = "all" if args.feedback_ids == "all" else args.feedback_ids.split(",")
    feedbacks = load_feedbacks(cfg["feedbacks"])
    teacher = None
    if args.teacher:
        kwargs = {}
        for kv in args.teacher_arg:
            k, _, v = kv.partition("=")
            try:
                kwargs[k] = json.loads(v)
            except json.JSONDecodeError:
                kwargs[k] = v
        teacher = build_teacher(args.teacher, kwargs)
    out_root = Path(args.out).with_suffix("")
    start_all = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start_all:7.1f}s] {msg}", file=sys.stderr, flush=True)

    loaded = load_model(args.model, Path(args.cache))
    model, tok = loaded.model, loaded.tokenizer
    machine = machine_info(torch)
    machine["device"] = str(loaded.device)

    def generate_fn(convs, max_tokens):
        return generate(model, tok, convs, max_new_tokens=max_tokens, batch_size=cfg["batch_size"], progress=False)

    overrides = {k: getattr(args, k) for k in ("epochs", "lr", "beta", "constraint_reduction") if getattr(args, k) is not None}
    train_cfg = TrainConfig(model=args.model, seed=args.seed, **overrides)
    weights = {k: getattr(args, k) for k in ("near_weight", "out_weight") if getattr(args, k) is not None}
    recipe = Recipe(SynthesisConfig(max_new_tokens=cfg["max_new_tokens"], seed=args.seed,
                                    prefer_minimal_edit=args.prefer_minimal_edit, contrast_near=args.contrast_near,
                                    **weights), train_cfg, Recipe.from_params().gate)
    results = []
    for fb in feedbacks:
        t0 = time.perf_counter()
        principle = to_principle(fb)
        train_sets, test_sets = split_sets(fb, principle, teacher, cfg["n_train"], cfg["n_test"], args.seed,
                                           args.n_constraint)
        log(f"{fb['id']}: synthesis on {len(train_sets.in_scope)}/{len(train_sets.near_scope)}/"
            f"{len(train_sets.out_of_scope)} prompts")
        synth = build_dataset(principle, generate_fn, teacher, [], recipe, on_stage=lambda s: log(f"{fb['id']}: {s}"),
                              prompt_sets=train_sets)
        fb_dir = out_root / fb["id"]
        synth.write(fb_dir / "data")
        log(f"{fb['id']}: {synth.counts}")
        adapters, training = {}, {}
        if synth.preferences:
            runs = [("c3po", synth.constraints)] if args.skip_dpo else [("dpo", []), ("c3po", synth.constraints)]
            for name, constraints in runs:
                log(f"{fb['id']}: training {name} ({len(synth.preferences)} pairs, {len(constraints)} constraint rows)")
                res = train_adapter(recipe, synth.preferences, constraints, fb_dir / name, args.cache, progress=False)
                adapters[name] = fb_dir / name
                training[name] = {"seconds": round(res.seconds, 1), "pairs_per_second": round(res.pairs_per_second, 3),
                                  "steps": res.steps, "final_loss": round(res.final_loss, 4),
                                  "final_accuracy": round(res.final_accuracy, 3)}
        else:
            log(f"{fb['id']}: no preference pair survived verification; adapters skipped")
        log(f"{fb['id']}: evaluating {', '.join(['base', 'in_context', *adapters])}")
        report, verdict = evaluate(model, tok, adapters, principle, test_sets, recipe, judge=teacher,
                                   candidate="c3po" if adapters else None, comparison=fb.get("comparison"),
                                   max_new_tokens=cfg["max_new_tokens"], batch_size=cfg["batch_size"])
        report.write(fb_dir, verdict)
        table = {r["condition"]: r for r in report.table()}
        seconds = time.perf_counter() - t0
        results.append({"id": fb["id"], "content": fb["content"], "checks": fb["checks"],
                        "comparison": report.comparison, "prompt_generator": train_sets.generator,
                        "synthesis": {"counts": synth.counts, "content_hash": synth.content_hash,
                                      "failures": len(synth.failures)},
                        "training": training, "table": table, "gate": {"passed": verdict[0], "reasons": verdict[1]},
                        "seconds": round(seconds, 1)})
        print_table(f"{fb['id']}: {fb['content']}  [{', '.join(f'{k} {v}' for k, v in synth.counts.items() if k in ('kept', 'repaired', 'baseline_repaired', 'dropped'))}; "
                    f"{seconds:.0f} s; gate {'passed' if verdict[0] else 'failed'}]", table)

    overall = {}
    for key, _ in CONDITIONS:
        rows = [r["table"][key] for r in results if key in r["table"]]
        if rows:
            overall[key] = {m: (sum(r[m] for r in rows if r[m] is not None) / max(1, sum(r[m] is not None for r in rows))
                                if any(r[m] is not None for r in rows) else None)
                            for m in ("adherence", "near_scope", "out_of_scope", "out_edit_distance")}
            overall[key]["feedbacks"] = len(rows)
    print_table(f"overall: mean over {len(results)} feedbacks", overall)
    throughput = {}
    for name in ("dpo", "c3po"):
        runs = [r["training"][name] for r in results if name in r["training"]]
        if runs:
            pairs = sum(r["pairs_per_second"] * r["seconds"] for r in runs)
            throughput[name] = {"pairs_per_second": round(pairs / sum(r["seconds"] for r in runs), 3),
                                "seconds": round(sum(r["seconds"] for r in runs), 1)}
    wall = time.perf_counter() - start_all
    print("\ntraining throughput: " + "; ".join(f"{k} {v['pairs_per_second']} pairs/s ({v['seconds']} s in all)"
                                                 for k, v in throughput.items()))
    print(f"machine: {machine['cpu']} ({machine['cpu_count']} cores, {machine['torch_threads']} torch threads), "
          f"{machine.get('gpu', 'no GPU')}, torch {machine['torch']}; wall time {wall / 60:.1f} min")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"config": {"name": args.config, **cfg, "train": train_cfg.__dict__, "teacher": args.teacher,
                          "recipe": args.recipe, "n_constraint": args.n_constraint,
                          "prefer_minimal_edit": args.prefer_minimal_edit, "contrast_near": args.contrast_near,
                          "constraint_weights": weights,
                          "seed": args.seed},
               "machine": machine, "wall_seconds": round(wall, 1), "throughput": throughput,
               "overall": overall, "feedbacks": results}
    out.write_text(json.dumps(summary, indent=1, ensure_ascii=False, default=str) + "\n")
    plot(results, overall, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
