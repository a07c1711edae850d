"""Inverse Constitutional AI on its synthetic preference sets: proposal, clustering, voting, and
reconstruction agreement without and with the learned constitution.

    python bench/icai.py --teacher local --limit 10           # the embedded 135M model, 10 pairs per set
    python bench/icai.py --teacher langchain_openai.ChatOpenAI \
        --teacher-arg model=gpt-4o-mini --teacher-arg base_url=http://host:8000/v1 --limit 30
    python bench/icai.py --unaligned ...                       # labels inverted (the paper's "unaligned")

Per data set: every pair gets one "Select the response that ..." principle from the teacher
(failures recorded, never dropped); principles are clustered (policies.principles); the largest
`--candidates` clusters are voted on every pair (policies.principles.icai); those kept (for > against,
relevance >= --min-relevance) ranked by for - against give a constitution of at most `--top-k`;
then the teacher, as judge, picks the preferred answer of every pair without and with it.

As in ICAI's training-set figures, the constitution is measured on the pairs it was learned
from. Answer order alternates across pairs in voting and judging, so a judge that always says
"A" scores 50%, not 0% or 100%. Prints a table; writes bench/results/icai.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.principles.icai import Pair, PairProposal, propose_from_pair, rank_principles, reconstruct, score_principle  # noqa: E402
from policies.principles import cluster_texts, similarity_matrix  # noqa: E402
from policies.teacher import build_teacher  # noqa: E402

SETS = ("orthogonal_adcbg", "aligned_vqvtb", "mixed_vqvtb_adcbg")
DEFAULT_DATA = ROOT.parent / "shared" / "eval"


def split_text(text: str) -> tuple[str, str]:
    """'Instruction: ...\\n\\nOutput: ...' -> (instruction, output)."""
    head, sep, output = text.partition("\n\nOutput:")
    if not sep:
        raise ValueError(f"no 'Output:' part in {text[:80]!r}")
    return head.removeprefix("Instruction:").strip(), output.strip()


def load_pairs(path: Path, unaligned: bool = False) -> list[Pair]:
    pairs = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            prompt_a, out_a = split_text(row["text_a"])
            prompt_b, out_b = split_text(row["text_b"])
            if prompt_a != prompt_b:
                raise ValueError(f"row {row.get('')}: the two texts answer different instructions")
            if row["preferred_text"] not in ("text_a", "text_b"):
                raise ValueError(f"row {row.get('')}: preferred_text is {row['preferred_text']!r}")
            a_wins = (row["preferred_text"] == "text_a") != unaligned
            chosen, rejected = (out_a, out_b) if a_wins else (out_b, out_a)
            pairs.append(Pair(id=f"{path.stem}:{row.get('', len(pairs))}", prompt=prompt_a, chosen=chosen, rejected=rejected))
    return pairs


_JSON_ASK = "Answer with only JSON: "


def json_prefix(messages: list[dict]) -> str:
    """The start of the JSON answer the last message asks for, to put in the model's mouth.

    `Answer with only JSON: {"preferred": "A"} ...` gives '{"preferred": "'; a template with
    "..." (`{"principles": ["Select the response that ..."]}`) gives everything before the dots.
    A 135M model almost never starts a JSON object by itself; started for it, it fills in the
    value (for a judge: the next token is the verdict, as in log-prob judging). Asks in any
    other form (e.g. ask_structured's retry message) get no prefix.
    """
    last = messages[-1]["content"] if messages else ""
    i = last.rfind(_JSON_ASK)
    if i < 0:
        return ""
    template = last[i + len(_JSON_ASK):]
    if "..." in template.split("}")[0]:
        return template[: template.index("...")].rstrip()
    m = re.match(r'\{\s*"\w+":\s*\[?\s*"', template)
    return m.group(0) if m else ""


def local_generate_fn(model_spec: str | None, cache: Path):
    """Greedy generation with the embedded model (adapters.generate, the offline generator). The
    JSON answer is started for the model (`json_prefix`) and generation stops once the object is
    closed (the rest would be rambling paid for in CPU time). The prefix is part of the returned
    answer, so parsers see it all."""
    from adapters.generate import generate
    from adapters.model import load_model

    lm = load_model(model_spec, cache)
    tok = lm.tokenizer
    # Every vocabulary entry that spells dots (".."/"..."/'..."' merge in many ways).
    dots = [i for i in range(len(tok)) if ".." in tok.decode([i]) or "…" in tok.decode([i])]

    def answer(messages: list[dict], max_tokens: int) -> str:
        prefix = json_prefix(messages)
        # After a prefix cut at a template's "...", the small model copies the dots; forbid them.
        bad = dots if prefix and not prefix.endswith('"') else None
        return generate(lm.model, tok, [messages], max_new_tokens=max_tokens, batch_size=1, progress=False,
                        answer_prefixes=[prefix], stop_at_json_end=True, suppress_tokens=bad)[0]

    return answer, lm.model_id


def run_set(name: str, pairs: list[Pair], llm, args) -> dict:
    t0 = time.perf_counter()
    proposals, failures = [], []
    for pair in pairs:
        res = propose_from_pair(pair, llm, n=args.per_pair, retries=args.retries)
        if isinstance(res, PairProposal):
            proposals.extend((p, pair.id, res.salvaged) for p in res.principles)
        else:
            failures.append(res.model_dump())
    t_propose = time.perf_counter() - t0

    texts = [p for p, _, _ in proposals]
    clusters = cluster_texts(texts, args.threshold)
    sim = similarity_matrix(texts) if texts else None
    # A cluster is voted through its medoid, the member most similar to the others.
    candidates = [(texts[max(c, key=lambda i: sim[i, c].sum())], len(c)) for c in clusters[: args.candidates]]
    t1 = time.perf_counter()
    scored = [((text, size), score_principle(text, pairs, llm)) for text, size in candidates]
    t_vote = time.perf_counter() - t1
    ranked = rank_principles(scored, args.min_relevance)
    constitution = [text for (text, _), _ in ranked[: args.top_k]]

    t2 = time.perf_counter()
    without = reconstruct(pairs, llm)
    with_c = reconstruct(pairs, llm, constitution) if constitution else None
    # With nothing kept, the judge-with-constitution path would go unmeasured; the top voted
    # candidates, unfiltered, are judged instead and reported apart (never as the constitution).
    unfiltered = [text for (text, _), _ in sorted(scored, key=lambda s: s[1]["for"] - s[1]["against"],
                                                  reverse=True)[: args.top_k]]
    with_u = reconstruct(pairs, llm, unfiltered) if unfiltered and not constitution else None
    t_judge = time.perf_counter() - t2
    return {
        "set": name, "pairs": len(pairs),
        "proposals": len(proposals), "salvaged": sum(s for _, _, s in proposals), "proposal_failures": len(failures),
        "clusters": len(clusters), "voted": len(candidates), "kept": len(ranked), "constitution": constitution,
        "votes": [{"principle": t, "cluster_size": n, **s} for (t, n), s in scored],
        "without": without, "with": with_c, "unfiltered_candidates": unfiltered if with_u else [],
        "with_unfiltered": with_u,
        "seconds": {"propose": round(t_propose, 1), "vote": round(t_vote, 1), "judge": round(t_judge, 1)},
        "failures": failures[:5],
    }


def fmt(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory of icai_synthetic_data_*.csv")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--teacher", default="local", help="'local' or a dotted LangChain chat model class")
    ap.add_argument("--teacher-arg", action="append", default=[], metavar="K=V",
                    help="constructor argument of the teacher class (repeatable; JSON values allowed)")
    ap.add_argument("--model", default=None, help="local model spec (default: the embedded model)")
    ap.add_argument("--model-cache", type=Path, default=ROOT / ".cache" / "models")
    ap.add_argument("--limit", type=int, default=None, help="pairs per data set (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    ap.add_argument("--unaligned", action="store_true", help="invert the labels")
    ap.add_argument("--per-pair", type=int, default=1, help="principles asked for per pair")
    ap.add_argument("--candidates", type=int, default=8, help="clusters voted on (largest first)")
    ap.add_argument("--top-k", type=int, default=5, help="constitution size at most")
    ap.add_argument("--min-relevance", type=float, default=0.1)
    ap.add_argument("--threshold", type=float, default=0.45, help="clustering similarity threshold")
    ap.add_argument("--retries", type=int, default=None,
                    help="re-asks when a proposal does not parse (default: 1; 0 for the local teacher, which "
                         "answers a re-ask by copying the JSON schema back)")
    ap.add_argument("--max-tokens", type=int, default=96, help="local teacher: new tokens per answer")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads for the local teacher (1: on shared, busy cores more threads "
                         "oversubscribe and run many times slower)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "icai.json")
    args = ap.parse_args(argv)

    kwargs = {}
    for kv in args.teacher_arg:
        k, _, v = kv.partition("=")
        try:
            kwargs[k] = json.loads(v)
        except json.JSONDecodeError:
            kwargs[k] = v
    teacher_name = args.teacher
    gen = None
    if args.teacher in ("local", "", None):
        import torch

        torch.set_num_threads(args.threads)
        gen, model_id = local_generate_fn(args.model, args.model_cache)
        teacher_name = f"local ({model_id}, greedy, JSON answer started for it)"
    llm = build_teacher(args.teacher, kwargs, gen)
    if llm is None:
        ap.error("no teacher: the ICAI harness needs one")
    if gen is not None:
        llm.max_tokens = args.max_tokens

    if args.retries is None:
        args.retries = 0 if gen is not None else 1

    results = []
    for name in args.sets:
        pairs = load_pairs(args.data / f"icai_synthetic_data_{name}.csv", args.unaligned)
        if args.limit and args.limit < len(pairs):
            # A seeded sample, not the first rows: the mixed set starts with the aligned set's rows.
            pairs = random.Random(args.seed).sample(pairs, args.limit)
        print(f"[{name}] {len(pairs)} pairs ...", file=sys.stderr, flush=True)
        results.append(run_set(name, pairs, llm, args))

    header = ("| set | pairs | proposals (salvaged) / failed | clusters | voted | kept | agreement without "
              "(invalid) | agreement with (invalid) | with top voted, unfiltered (invalid) |")
    print(f"\nICAI reconstruction, teacher: {teacher_name}{', unaligned labels' if args.unaligned else ''}\n")
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        w, c = r["without"], r["with"]
        print(f"| {r['set']} | {r['pairs']} | {r['proposals']} ({r['salvaged']}) / {r['proposal_failures']} | "
              f"{r['clusters']} | {r['voted']} | {r['kept']} | {fmt(w['agreement'])} ({w['invalid']}) | "
              + (f"{fmt(c['agreement'])} ({c['invalid']}) |" if c else "– (empty constitution) |")
              + (f" {fmt(r['with_unfiltered']['agreement'])} ({r['with_unfiltered']['invalid']}) |"
                 if r["with_unfiltered"] else " – |"))
    for r in results:
        print(f"\n{r['set']} constitution:" + "".join(f"\n  {i + 1}. {p}" for i, p in enumerate(r["constitution"]))
              if r["constitution"] else f"\n{r['set']}: no principle kept")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"teacher": teacher_name, "teacher_args": {k: ("***" if "key" in k.lower() else v) for k, v in kwargs.items()},
              "unaligned": args.unaligned, "limit": args.limit, "seed": args.seed, "candidates": args.candidates, "top_k": args.top_k,
              "min_relevance": args.min_relevance, "threshold": args.threshold, "machine": platform.platform(),
              "results": results}
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
