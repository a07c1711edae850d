"""Which corrections recipe keeps everything else as it was? A sweep over recipe variants, offline.

    python bench/corrections_recipe.py                        # the recipe as it is
    python bench/corrections_recipe.py --variants V.json      # [{"name": ..., "params": {...}}, ...]

bench/corrections.py measures the recipe the way a user meets it (through the API, one job, half
an hour). Tuning needs many runs, so this script runs the job's own pieces without the server:
the train split's corrections of bench/data/corrections.jsonl, each "answered" by the base
model's greedy answer, go through service.distill.corrections.correction_rows (pairs, near and
out-of-scope anchors), service.distill.pipeline.train_adapter (the recipe with a variant's
params over it) and evaluate_corrections (the job's report: adoption, answers identical to base
on the evaluation corpus's near and unrelated requests). Beside the report: the fact on the
corrections' unseen paraphrases and on their near questions (a leak: "the largest city in
Australia is Canberra"), and answers identical to base on the near questions and on the first
half of the benchmark's unrelated requests (the second half is kept for bench/corrections.py --split test).

Only the train split is used: it is the tuning split. Prints a table; writes
bench/results/corrections-recipe.json.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.distill import Recipe, correction_rows, evaluate_corrections, train_adapter  # noqa: E402
from adapters.generate import generate  # noqa: E402
from adapters.model import load_model  # noqa: E402
from policies.corpus import EVALUATION, load_corpus  # noqa: E402
from policies.encoder import load_encoder  # noqa: E402

DATA = ROOT / "bench" / "data" / "corrections.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=None, help="JSON file: a list of {name, params}")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--unrelated", type=int, default=30)
    ap.add_argument("--similarity", action="store_true",
                    help="only print the encoder cosines the version scope's threshold was set from, and stop")
    args = ap.parse_args()
    variants = json.loads(Path(args.variants).read_text()) if args.variants else [{"name": "recipe", "params": {}}]
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    facts = [r for r in rows if r["kind"] == "correction" and r["split"] == "train"]
    unrelated = [r["request"] for r in rows if r["kind"] == "unrelated"][: args.unrelated]
    cache = Path(os.environ.get("REFINERY_MODEL_CACHE", ROOT / ".cache" / "models"))

    if args.similarity:
        similarity(facts, unrelated, load_encoder(None, cache))
        return
    loaded = load_model(None, cache, "auto")
    model, tok = loaded.model, loaded.tokenizer
    encoder = load_encoder(None, cache)
    corpus, eval_corpus = load_corpus(encoder), load_corpus(encoder, EVALUATION)
    generate_answers = lambda m, convs, n: generate(m, tok, convs, max_new_tokens=n, batch_size=16, progress=False)  # noqa: E731
    memo: dict[tuple[str, int], str] = {}

    def base_generate(convs: list[list[dict]], max_tokens: int) -> list[str]:
        todo = [c for c in convs if (json.dumps(c), max_tokens) not in memo]
        for c, a in zip(todo, generate_answers(model, todo, max_tokens)):
            memo[(json.dumps(c), max_tokens)] = a
        return [memo[(json.dumps(c), max_tokens)] for c in convs]

    user = lambda q: [{"role": "user", "content": q}]  # noqa: E731
    answered = base_generate([user(r["request"]) for r in facts], args.max_tokens)
    corr_rows = [{"id": r["id"], "messages": user(r["request"]), "response": a, "correction": r["correction"],
                  "created": i} for i, (r, a) in enumerate(zip(facts, answered))]
    para = [(q, r["fact"]) for r in facts for q in r["paraphrases"]]
    near = [(q, r["fact"]) for r in facts for q in r["near"]]
    base_para = base_generate([user(q) for q, _ in para], args.max_tokens)
    base_near = base_generate([user(q) for q, _ in near], args.max_tokens)
    base_unrel = base_generate([user(q) for q in unrelated], args.max_tokens)

    from peft import PeftModel

    results = []
    for v in variants:
        recipe = Recipe.from_params(v["params"])
        syn = recipe.synthesis
        t0 = time.perf_counter()
        data = correction_rows(corr_rows, encoder, corpus, eval_corpus, base_generate,
                               near_per_request=syn.near_per_correction, n_out=syn.n_out_of_scope,
                               near_weight=syn.near_weight, out_weight=syn.out_weight,
                               max_tokens=syn.max_new_tokens, seed=syn.seed)
        out = Path(tempfile.mkdtemp(prefix="refinery-recipe-")) / "adapter"
        row = {"name": v["name"], "params": v["params"], "pairs": len(data["pairs"]),
               "constraints": len(data["constraints"])}
        try:
            trained = train_adapter(recipe, data["pairs"], data["constraints"], out, cache, progress=True)
            row["train_seconds"] = round(trained.seconds, 1)
        except RuntimeError as e:  # adapters.guard.TrainingStopped
            row["stopped"] = str(e)
            results.append(row)
            print(f"{v['name']}: stopped: {e}")
            write(results)
            continue
        report = evaluate_corrections(model, tok, out, data["evaluation"], recipe.gate, max_new_tokens=syn.max_new_tokens)
        cand = PeftModel.from_pretrained(model, str(out), adapter_name="sweep")
        cand.eval()
        try:
            c_para = generate_answers(cand, [user(q) for q, _ in para], args.max_tokens)
            c_near = generate_answers(cand, [user(q) for q, _ in near], args.max_tokens)
            c_unrel = generate_answers(cand, [user(q) for q in unrelated], args.max_tokens)
        finally:
            model = cand.unload()
        row.update({"adoption": report["adoption"], "near_identical": report["scopes"]["near_scope"]["identical"],
                    "out_identical": report["scopes"]["out_of_scope"]["identical"], "gate": report["gate"]["passed"],
                    "paraphrase_fact": sum(f.lower() in a.lower() for a, (_, f) in zip(c_para, para)) / len(para),
                    "paraphrase_fact_base": sum(f.lower() in a.lower() for a, (_, f) in zip(base_para, para)) / len(para),
                    "near_fact": sum(f.lower() in a.lower() for a, (_, f) in zip(c_near, near)) / len(near),
                    "near_fact_base": sum(f.lower() in a.lower() for a, (_, f) in zip(base_near, near)) / len(near),
                    "near_questions_identical": sum(a.strip() == b.strip() for a, b in zip(c_near, base_near)) / len(near),
                    "unrelated_identical": sum(a.strip() == b.strip() for a, b in zip(c_unrel, base_unrel)) / len(unrelated),
                    "seconds": round(time.perf_counter() - t0, 1),
                    "unrelated_examples": [{"prompt": q, "base": b, "candidate": c}
                                           for q, b, c in list(zip(unrelated, base_unrel, c_unrel))[:6]]})
        results.append(row)
        print(json.dumps({k: row[k] for k in row if k != "unrelated_examples"}), flush=True)
        write(results)

    print(f"\n{len(facts)} train corrections, embedded model; job report on the evaluation corpus, "
          f"paraphrases and unrelated from bench/data/corrections.jsonl")
    cols = ("adoption", "paraphrase_fact", "near_fact", "near_questions_identical", "near_identical", "out_identical",
            "unrelated_identical")
    print(f"{'variant':28} " + " ".join(f"{c:>19}" for c in cols) + f" {'train s':>8}")
    for r in results:
        cells = " ".join(f"{r[c]:>19.2f}" if isinstance(r.get(c), float) else f"{'stopped' if 'stopped' in r else '-':>19}"
                         for c in cols)
        print(f"{r['name']:28} {cells} {r.get('train_seconds', '-'):>8}")
    print(f"wrote {write(results)}")


def similarity(facts: list[dict], unrelated: list[str], encoder) -> None:
    """Encoder cosine of each paraphrase, near question and unrelated request to the nearest
    corrected request of the train split: where policies.adapter_scope's THRESHOLD comes from."""
    import numpy as np

    from policies.adapter_scope import THRESHOLD

    learned = np.stack([encoder.embed_one(r["request"]) for r in facts])
    nearest = lambda qs: [float((learned @ encoder.embed_one(q)).max()) for q in qs]  # noqa: E731
    sets = {"paraphrases": nearest([q for r in facts for q in r["paraphrases"]]),
            "near questions": nearest([q for r in facts for q in r["near"]]), "unrelated": nearest(unrelated)}
    print(f"cosine to the nearest of {len(facts)} corrected requests (train split); threshold {THRESHOLD}")
    print(f"{'set':16} {'n':>4} {'min':>6} {'median':>7} {'max':>6} {'>= threshold':>13}")
    for name, xs in sets.items():
        print(f"{name:16} {len(xs):>4} {min(xs):>6.2f} {float(np.median(xs)):>7.2f} {max(xs):>6.2f} "
              f"{sum(x >= THRESHOLD for x in xs) / len(xs):>13.0%}")


def write(results: list[dict]) -> Path:
    """The results so far (after every variant: a sweep stopped half-way keeps what it measured)."""
    dest = ROOT / "bench" / "results" / "corrections-recipe.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "split": "train",
                                "variants": results}, indent=1, ensure_ascii=False))
    return dest


if __name__ == "__main__":
    main()
