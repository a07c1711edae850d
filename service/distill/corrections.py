"""Corrections in the refinement job: preference pairs (the user's correction over our answer),
anchored like a principle's, and an evaluation that says whether the candidate learned the
corrections and left everything else alone. Complaints whose better answer an operator accepted
(DRIFT, service.store.refinements) come in the same way, as rows of source "complaint" whose
`correction` is that answer; counts are kept per source.

Training rows, from the corrections policies.corrections selects:
- one pair per corrected request: the conversation as it was, chosen = the correction,
  rejected = the answer we gave;
- near-scope anchors: for each corrected request, the built-in corpus's requests closest to it in
  meaning but not asking the same (cosine below PARAPHRASE), with the base model's own answers as
  constraint rows: "the largest city in Australia" must stay as it was when "the capital of
  Australia" is corrected, while "What's the capital of Australia? I always think it's Sydney."
  (cosine 0.8 or more) asks the same thing, and anchoring the base model's answer there would
  teach the fact the user corrected;
- out-of-scope anchors: requests of the corpus far from every corrected one, the same way.

The evaluation answers greedily, base and candidate: the corrected requests (does the answer
adopt the correction's key terms), the evaluation corpus's requests nearest to them and a sample
of its unrelated requests (is the answer identical to the base model's). The gate asks for both:
corrections adopted (GateThresholds.min_adherence) and unrelated answers kept
(GateThresholds.min_identical_out_of_scope).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Callable

import numpy as np

from adapters.gate import GateThresholds
from adapters.generate import generate
from policies.adapter_scope import CompiledScope
from policies.corpus import Corpus
from policies.corrections import Selection, adopted, key_terms, select
from policies.encoder import Encoder
from policies.text import last_user_text

GenerateFn = Callable[[list[list[dict]], int], list[str]]
PARAPHRASE = 0.8  # encoder cosine from which a corpus request may ask what a corrected one asked
FAR = 0.3  # below this cosine to every corrected request, a corpus request is unrelated


def correction_rows(rows: list[dict], encoder: Encoder, corpus: Corpus, eval_corpus: Corpus | None,
                    base_generate: GenerateFn, near_per_request: int = 3, n_out: int = 40,
                    near_weight: float = 0.03, out_weight: float = 0.06, n_eval_out: int = 20,
                    max_tokens: int = 64, seed: int = 0) -> dict:
    """Everything the job needs of its corrections: pairs, constraint rows, evaluation prompts, the
    counts (used, dropped and why), the ids used and the ids seen (used or dropped: a version
    learned them, or why not is in its counts), as one JSON-ready dict (kept on disk by the job)."""
    sel: Selection = select(rows, encoder.embed_one)
    source_of = {r["id"]: r.get("source", "correction") for r in rows}
    by_source = {src: _counts(sel, source_of, src) for src in ("correction", "complaint")}
    seen = {src: [r["id"] for r in rows if source_of[r["id"]] == src] for src in by_source}
    if not sel.kept:
        return {"pairs": [], "constraints": [], "evaluation": None, "counts": by_source["correction"],
                "complaint_counts": by_source["complaint"], "ids": [], "seen": seen["correction"],
                "complaints_seen": seen["complaint"]}
    requests = [r["request"] for r in sel.kept]
    req_vecs = np.stack([encoder.embed_one(q) for q in requests])
    rng = random.Random(seed)

    def near_and_far(c: Corpus, per_request: int, n_far: int) -> tuple[list[str], list[str]]:
        sims = c.vectors @ req_vecs.T  # (corpus, requests)
        near: list[str] = []
        for j in range(len(requests)):
            order = np.argsort(-sims[:, j])
            picked = [c.prompts[i] for i in order if sims[i, j] < PARAPHRASE][:per_request]
            near += [q for q in picked if q not in near]
        far_pool = [c.prompts[i] for i in np.where(sims.max(axis=1) < FAR)[0]]
        return near, rng.sample(far_pool, k=min(n_far, len(far_pool)))

    near, far = near_and_far(corpus, near_per_request, n_out)
    answers = base_generate([[{"role": "user", "content": q}] for q in near + far], max_tokens)
    constraints = [{"prompt": q, "completion": a, "weight": near_weight if i < len(near) else out_weight,
                    "scope": "near_scope" if i < len(near) else "out_of_scope", "max_tokens": max_tokens}
                   for i, (q, a) in enumerate(zip(near + far, answers)) if a.strip()]
    pairs = [{"prompt": r["messages"], "chosen": r["correction"].strip(), "rejected": r["response"] or "",
              "source": source_of[r["id"]], "feedback_id": r["id"]} for r in sel.kept]
    evaluation = None
    if eval_corpus is not None:
        e_near, e_far = near_and_far(eval_corpus, 1, n_eval_out)
        evaluation = {"corrected": [{"id": r["id"], "source": source_of[r["id"]], "messages": r["messages"],
                                     "request": r["request"], "correction": r["correction"],
                                     "terms": key_terms(r["correction"], r["response"] or "", r["request"])}
                                    for r in sel.kept],
                      "near_scope": e_near, "out_of_scope": e_far}
    anchors = {"near_rows": sum(c["scope"] == "near_scope" for c in constraints),
               "out_rows": sum(c["scope"] == "out_of_scope" for c in constraints)}
    for src, counts in by_source.items():
        counts["pairs"] = sum(p["source"] == src for p in pairs)
        if counts["pairs"]:
            counts.update(anchors)  # shared: one set of anchors for every corrected request
    return {"pairs": pairs, "constraints": constraints, "evaluation": evaluation, "counts": by_source["correction"],
            "complaint_counts": by_source["complaint"],
            "ids": [r["id"] for r in sel.kept if source_of[r["id"]] == "correction"], "seen": seen["correction"],
            "complaints": [r["id"] for r in sel.kept if source_of[r["id"]] == "complaint"],
            "complaints_seen": seen["complaint"]}


def _counts(sel: Selection, source_of: dict[str, str], source: str) -> dict:
    """Selection.counts for the rows of one source (corrections, or complaints' accepted answers)."""
    part = Selection(kept=[r for r in sel.kept if source_of[r["id"]] == source],
                     dropped=[d for d in sel.dropped if source_of[d["id"]] == source])
    return part.counts()


def content_hash(data: dict) -> str:
    canon = json.dumps([data["pairs"], data["constraints"]], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def evaluate_corrections(model, tokenizer, adapter_dir: Path | str, evaluation: dict, gate: GateThresholds,
                         max_new_tokens: int = 64, progress: bool = False, generate_fn=None,
                         scope: CompiledScope | None = None) -> dict:
    """Base and candidate on the evaluation prompts of `correction_rows`; the gate's verdict.

    `model` is the plain base model; the adapter is put on with PEFT and taken off again. With
    `generate_fn(conversations, max_new_tokens, adapter_dir or None)` the answers come from the
    serving engine instead (service.distill.remote) and `model` is not used. With the version's
    `scope` (policies.adapter_scope) the candidate answers as it will be served: the base answer
    where a request is outside it. The gate judges those; the adapter's own answers everywhere
    are reported beside them ("identical_adapter")."""
    from peft import PeftModel

    convs = ([c["messages"] for c in evaluation["corrected"]]
             + [[{"role": "user", "content": q}] for q in evaluation["near_scope"] + evaluation["out_of_scope"]])
    if generate_fn is not None:
        base, cand = generate_fn(convs, max_new_tokens, None), generate_fn(convs, max_new_tokens, adapter_dir)
    else:
        run = lambda m: generate(m, tokenizer, convs, max_new_tokens=max_new_tokens, batch_size=16, progress=progress)  # noqa: E731
        base = run(model)
        wrapped = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name="eval-corrections")
        wrapped.eval()
        try:
            cand = run(wrapped)
        finally:
            wrapped.unload()
    n_c, n_n = len(evaluation["corrected"]), len(evaluation["near_scope"])
    adapter_only = cand
    if scope is not None:
        inside = [scope.covers(last_user_text(c)) for c in convs]
        cand = [c if ok else b for c, b, ok in zip(cand, base, inside)]
    else:
        inside = [True] * len(convs)
    rows = []
    for i, c in enumerate(evaluation["corrected"]):
        rows.append({"id": c["id"], "source": c.get("source", "correction"), "request": c["request"], "correction": c["correction"], "terms": c["terms"],
                     "base": base[i], "candidate": cand[i], "base_adopts": adopted(base[i], c["terms"]),
                     "adopts": adopted(cand[i], c["terms"])})
    judged = [r for r in rows if r["adopts"] is not None]
    scopes = {}
    for name, lo, hi in (("near_scope", n_c, n_c + n_n), ("out_of_scope", n_c + n_n, len(convs))):
        same = [base[i].strip() == cand[i].strip() for i in range(lo, hi)]
        alone = [base[i].strip() == adapter_only[i].strip() for i in range(lo, hi)]
        share = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        scopes[name] = {"n": hi - lo, "identical": share(same), "identical_adapter": share(alone),
                        "adapter_applied": share(inside[lo:hi]),
                        "prompts": [{"request": convs[i][-1]["content"], "base": base[i], "candidate": cand[i],
                                     "adapter_applied": inside[i]} for i in range(lo, hi)]}
    adoption = sum(r["adopts"] for r in judged) / len(judged) if judged else None
    base_adoption = sum(bool(r["base_adopts"]) for r in judged) / len(judged) if judged else None
    reasons = []
    check = lambda ok, text: reasons.append(("pass: " if ok else "fail: ") + text)  # noqa: E731
    if adoption is None:
        check(False, "no correction added words to check its adoption by")
    else:
        check(adoption >= gate.min_adherence, f"corrections adopted on their requests {adoption:.2f} >= {gate.min_adherence:.2f}")
    for name, floor in (("near_scope", gate.min_identical_near_scope), ("out_of_scope", gate.min_identical_out_of_scope)):
        value = scopes[name]["identical"]
        if floor is not None and scopes[name]["n"]:
            check(value is not None and value >= floor - 1e-9,
                  f"{name.replace('_', '-')} answers identical to base {value:.2f} >= {floor:.2f}")
    return {"adoption": adoption, "base_adoption": base_adoption, "corrections": rows, "scopes": scopes,
            "scope": None if scope is None else scope.scope.to_json(),
            "gate": {"passed": all(r.startswith("pass:") for r in reasons), "reasons": reasons}}


def report_markdown(report: dict) -> str:
    fmt = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731
    lines = ["# Corrections: what the candidate learned", "",
             f"- corrections adopted on their requests: {fmt(report['adoption'])} (base model {fmt(report['base_adoption'])})",
             *[f"- {name.replace('_', '-')} answers identical to base: {fmt(sc['identical'])} as served "
               f"(the adapter on {fmt(sc.get('adapter_applied'))} of them), {fmt(sc.get('identical_adapter'))} with the "
               f"adapter on every one ({sc['n']} requests of the evaluation corpus)"
               for name, sc in ((n, report['scopes'][n]) for n in ("near_scope", "out_of_scope"))], "",
             f"## Gate: {'passed' if report['gate']['passed'] else 'failed'}", ""]
    lines += [f"- {r}" for r in report["gate"]["reasons"]]
    lines += ["", "| source | request | key terms | candidate answer begins | adopted |", "|---|---|---|---|---|"]
    clip = lambda t: " ".join(t.split())[:90].replace("|", "\\|")  # noqa: E731
    for r in report["corrections"]:
        lines.append(f"| {r.get('source', 'correction')} | {clip(r['request'])} | {', '.join(r['terms'])} | {clip(r['candidate'])} | "
                     f"{ {True: 'yes', False: 'no', None: '?'}[r['adopts']]} |")
    return "\n".join(lines) + "\n"
