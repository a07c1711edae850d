"""One refinement job: approved adapter-mode principles -> C3PO data, users' corrections and the
complaints' better answers operators accepted -> ILF / DRIFT pairs (service.distill.corrections) -> one LoRA adapter that distils all of them -> evaluation
per principle and of the corrections -> a registered candidate (and, if every gate passes and the
operator allows it, a canary or a promotion through the rollout's one path).

One adapter carries every approved adapter-mode principle and every correction no operator
rejected, so a new version never drops what an older version had learned. Each stage leaves its output on disk (data sets per principle,
keyed by the principle's content; the adapter, the reports and the registration in the job's
directory), and a resumed job skips every stage whose output is already there. The compute is
service.distill.pipeline's; this module keeps what it makes and registers the result.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

from peft import PeftModel

from adapters.files import write_atomic
from adapters.generate import generate
from adapters.model import load_model
from adapters.registry import Registry
from policies.corpus import EVALUATION, load_corpus
from policies.adapter_scope import version_scope
from policies.encoder import load_encoder
from policies.scope_model import ScopeModels
from policies.synthesis import SynthesisResult
from policies.text import last_user_text
from service.distill.corrections import content_hash, correction_rows, evaluate_corrections, report_markdown
from service.distill.pipeline import (build_dataset, corpus_prompts, evaluate, report_table, train_adapter,
                                     training_rows)
from service.distill.recipe import Recipe
from service.distill.remote import EngineGenerator
from service.distill.thumbs import thumb_rows
from service.learn.review import PrincipleBook
from service.rollout.lifecycle import Lifecycle
from service.settings import Settings
from service.store import Store

log = logging.getLogger(__name__)


# Bumped when data sets are made another way (2: prompts from the built-in corpora by scope model;
# 3: corpora grown to 194 topics, and a named person's evaluation requests point at that person).
DATASET_FORMAT = 3


def principle_key(p: dict, synthesis: dict | None = None) -> str:
    """Changes when an operator edits what the principle says, the synthesis settings change, or
    data sets are made another way, so its data set is made again."""
    canon = json.dumps([DATASET_FORMAT, p["text"], p["domain"], p["effect"], sorted(p["checks"] or []), synthesis or {}],
                       ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def select_principles(book: PrincipleBook, requested: list[str] | None) -> tuple[list[dict], list[dict]]:
    """(new, all): the principles this job distils for the first time, and every principle the
    adapter must carry (approved, adapter or both mode)."""
    carried = [p for p in book.list(status="approved", limit=10_000) if p["mode"] in ("adapter", "both")]
    if requested:
        by_id = {p["id"]: p for p in carried}
        missing = [i for i in requested if i not in by_id]
        if missing:
            raise ValueError(f"not approved adapter-mode principles: {missing}")
        new = [by_id[i] for i in requested]
    else:
        new = [p for p in carried if not p.get("distilled_version")]
    return new, carried


def logged_prompts(store: Store, limit: int = 2000) -> list[str]:
    """Recent user requests: in-domain ones become in-scope prompts, the rest out-of-scope ones."""
    out: list[str] = []
    for messages in store.exchanges.recent_requests(limit):
        last = last_user_text(messages)
        if last and last not in out:
            out.append(last)
    return out


def refine_job(settings: Settings, store: Store, job: dict, beat: Callable[[str], None] | None = None,
               progress: bool = True) -> dict:
    """Run (or resume) one job. `beat(stage)` reports the stage it is in (the worker's heartbeat)."""
    stage = beat or (lambda name: None)
    book = PrincipleBook(store)
    work = Path(settings.data_dir) / "jobs" / job["id"]
    registry = Registry(Path(settings.data_dir) / "adapters")
    marker = work / "registered.json"
    if marker.exists():
        # Resumed after the adapter was registered: only what follows registration is left.
        return _after_registration(settings, book, registry, job, json.loads(marker.read_text()))
    new, carried = select_principles(book, job["principle_ids"])
    waiting = store.corrections.waiting() + store.refinements.waiting() if not job["principle_ids"] else 0
    if not new and not waiting:
        return {"principles": [], "note": "no approved adapter-mode principle, no correction and no accepted "
                                          "complaint answer is waiting to be distilled"}
    recipe = Recipe.from_params(job["params"], model=settings.model)
    work.mkdir(parents=True, exist_ok=True)

    # The served model answers the baselines: the base plus the version serving now, on the
    # serving engine's replicas when vLLM is the engine (service.distill.remote), else here.
    stage("load model")
    active = registry.active(settings.default_adapter)
    remote = EngineGenerator.from_settings(settings) if settings.engine == "vllm" else None
    model = tok = None
    if remote is None:
        lm = load_model(settings.model, settings.model_cache_dir, settings.device)
        model, tok = lm.model, lm.tokenizer
        if active is not None:
            model = PeftModel.from_pretrained(model, str(active.path), adapter_name="serving")
            model.eval()

    new_ids = {p["id"] for p in new}

    def generate_fn(conversations: list[list[dict]], max_tokens: int) -> list[str]:
        if remote is not None:
            return remote.generate(conversations, max_tokens, model=active.version_id if active else None)
        return generate(model, tok, conversations, max_new_tokens=max_tokens, batch_size=16, progress=progress)

    def base_generate_fn(conversations: list[list[dict]], max_tokens: int) -> list[str]:
        if remote is not None:
            return remote.generate(conversations, max_tokens)
        with model.disable_adapter():
            return generate_fn(conversations, max_tokens)

    teacher = settings.build_teacher(generate_fn=lambda msgs, n: generate_fn([msgs], n)[0])
    logged = logged_prompts(store)
    # Scope by meaning: the principles' scope models split logged traffic and pick the corpus's
    # real requests for training; the evaluation corpus (written apart from it) grades the adapter.
    encoder = load_encoder(settings.encoder, settings.model_cache_dir)
    models = ScopeModels(encoder, load_corpus(encoder))
    evaluation = load_corpus(encoder, EVALUATION)

    # The requests each principle's evidence came from: its own examples of its domain.
    evidence = {p["id"]: tuple(sorted({e["prompt"] for e in book.evidence(p) if e.get("prompt")})) for p in carried}

    # 1. One data set per principle, kept across jobs while the principle says the same thing.
    datasets: dict[str, SynthesisResult] = {}
    for p in carried:
        ddir = Path(settings.data_dir) / "datasets" / p["id"] / principle_key(p, recipe.synthesis.model_dump())
        if (ddir / "synthesis.json").exists():
            try:
                datasets[p["id"]] = SynthesisResult.model_validate_json((ddir / "synthesis.json").read_text())
                continue
            except ValueError:  # cut short by a crash while it was written: made again
                log.warning("data set %s is unreadable; synthesising it again", ddir)
        stage(f"synthesis {p['id']}")
        # A principle the serving version already carries gets its baselines from the base
        # model: the new adapter is trained from the base, and the serving version's answers
        # already follow the rule, so they would leave no pair to learn from.
        gen = generate_fn if active is None or p["id"] in new_ids else base_generate_fn
        positives = evidence[p["id"]]
        train_corpus, eval_sets = corpus_prompts(p, models, evaluation, positives, recipe.synthesis.n_eval,
                                                 recipe.synthesis.seed)
        result = build_dataset(p, gen, teacher, logged, recipe,
                               on_stage=lambda s, pid=p["id"]: stage(f"synthesis {pid}: {s}"),
                               corpus=train_corpus, eval_prompts=eval_sets,
                               scope_fn=lambda d, q, pos=positives: models.score(d, q, pos))
        result.write(ddir)
        store.jobs.record_dataset(result.content_hash, p["id"], job["id"], result.counts, str(ddir))
        datasets[p["id"]] = result
    # Corrections, and complaints' better answers an operator accepted (DRIFT): one pair per
    # request, anchored by the base model's own answers.
    corr_path = work / "corrections.json"
    if corr_path.exists():
        corrections = json.loads(corr_path.read_text())
    else:
        stage("corrections")
        syn = recipe.synthesis
        rows = store.corrections.trainable() + [dict(r, source="complaint") for r in store.refinements.trainable()]
        rows.sort(key=lambda r: r["created"])
        corrections = correction_rows(rows, encoder, models.corpus, evaluation,
                                      base_generate_fn if active is not None else generate_fn,
                                      near_per_request=syn.near_per_correction, n_out=syn.n_out_of_scope,
                                      near_weight=syn.near_weight,
                                      out_weight=syn.out_weight, max_tokens=syn.max_new_tokens, seed=syn.seed)
        write_atomic(corr_path, json.dumps(corrections, ensure_ascii=False))
    if active is not None and remote is None:
        model = model.unload()  # the plain base again, for training's reference and evaluation

    thumbs_path = work / "thumbs.json"
    if thumbs_path.exists():
        thumbs = json.loads(thumbs_path.read_text())
    else:
        thumbs = thumb_rows(store.corrections.thumbs())
        write_atomic(thumbs_path, json.dumps(thumbs, ensure_ascii=False))
    set_by_job = {"kto_desirable_weight", "kto_undesirable_weight"} & set((job["params"] or {}).get("train", {}))

    preferences, constraints = training_rows(datasets)
    preferences += corrections["pairs"]
    constraints += corrections["constraints"]
    if not preferences:
        raise RuntimeError("no preference pair survived verification: " +
                           "; ".join(f"{pid}: {d.counts}" for pid, d in datasets.items())
                           + f"; corrections: {corrections['counts']}")
    hashes = sorted(d.content_hash for d in datasets.values()) + ([content_hash(corrections)] if corrections["pairs"] else [])
    if thumbs["unpaired"]:
        hashes.append(hashlib.sha256(json.dumps([(u["feedback_id"], u["label"]) for u in thumbs["unpaired"]]).encode()).hexdigest())
    data_hash = hashlib.sha256("".join(hashes).encode()).hexdigest()

    # 2. One adapter for every carried principle. Keyed by the data: a job resumed after a
    # principle was edited (new data sets) trains again rather than reusing the old adapter.
    key = data_hash[:16]
    adapter_dir = work / f"adapter-{key}"
    if not (adapter_dir / "loss_curve.json").exists():
        stage("train")
        trained = train_adapter(recipe, preferences, constraints, adapter_dir, settings.model_cache_dir, progress,
                                unpaired=thumbs["unpaired"], kto_weights=None if set_by_job else thumbs["weights"])
        write_atomic(work / f"train-{key}.json", json.dumps(trained.__dict__, default=str, indent=1))
    # Where the adapter answers (policies.adapter_scope): beside it, so registration keeps it.
    scope = version_scope([{"id": p["id"], "domain": p["domain"], "positives": evidence[p["id"]]} for p in carried],
                          [last_user_text(r["prompt"]) for r in corrections["pairs"] + thumbs["unpaired"]])
    scope.write(adapter_dir)
    # The candidate is judged as it will be served: the base weights outside its scope.
    served = scope.compile(encoder.embed_one, models.score) if settings.adapter_scope else None

    # 3. Evaluation per principle; the adapter is a candidate only if every principle passes.
    reports, passed_all = {}, True
    for p in carried:
        rdir = work / "reports" / key / p["id"]
        if (rdir / "report.json").exists():
            try:
                data = json.loads((rdir / "report.json").read_text())
                reports[p["id"]] = data
                passed_all &= data["gate"]["passed"]
                continue
            except (ValueError, KeyError):  # cut short by a crash: evaluated again
                log.warning("report %s is unreadable; evaluating again", rdir)
        stage(f"evaluate {p['id']}")
        data = datasets[p["id"]]
        # The evaluation corpus's requests (another source than the training prompts); the
        # training prompts only if there are none, and the report says so.
        has_eval = data.eval_prompts is not None and bool(data.eval_prompts.in_scope)
        written = data.eval_prompts.sources.get("in_scope", {}).get("templates", 0) if has_eval else 0
        source = (("the evaluation corpus, written independently of the training prompts"
                   + (f" (in scope: {written} of the template generator's, for a domain that names a person)" if written else "")
                   if data.eval_prompts.generator == "corpus" else
                   f"held-out prompts of the training generator ({data.eval_prompts.generator})")
                  if has_eval else "the training prompts themselves (nothing else was available)")
        report, verdict = evaluate(model, tok, {"adapter": adapter_dir}, p, data.eval_prompts if has_eval else data.prompts,
                                   recipe, judge=teacher, candidate="adapter", progress=progress, prompt_source=source,
                                   generate_fn=remote.evaluation_fn() if remote is not None else None,
                                   served=served.covers if served is not None else None)
        report.write(rdir, verdict)
        reports[p["id"]] = json.loads((rdir / "report.json").read_text())
        passed_all &= verdict[0]
    corrections_report = None
    if corrections["pairs"] and corrections["evaluation"]:
        rdir = work / "reports" / key / "corrections"
        if (rdir / "report.json").exists():
            corrections_report = json.loads((rdir / "report.json").read_text())
        else:
            stage("evaluate corrections")
            corrections_report = evaluate_corrections(
                model, tok, adapter_dir, corrections["evaluation"], recipe.gate, progress=progress,
                scope=served,
                generate_fn=remote.evaluation_fn() if remote is not None else None)
            rdir.mkdir(parents=True, exist_ok=True)
            (rdir / "report.md").write_text(report_markdown(corrections_report), encoding="utf-8")
            write_atomic(rdir / "report.json", json.dumps(corrections_report, ensure_ascii=False, indent=1))
        passed_all &= corrections_report["gate"]["passed"]

    # 4. Register (once, even if the job is resumed after this point: a version this job
    # registered from this data before a crash is found again rather than registered twice).
    stage("register")
    mine = [v for v in registry.list(settings.default_adapter)
            if v.created_by == f"job:{job['id']}" and v.dataset_hash == data_hash]
    if mine:
        version_id = mine[-1].version_id
    else:
        summary = {pid: {"gate": r["gate"], "table": report_table(r)} for pid, r in reports.items()}
        if corrections_report is not None:
            summary["corrections"] = {"gate": corrections_report["gate"], "adoption": corrections_report["adoption"],
                                      "identical": {k: v["identical"] for k, v in corrections_report["scopes"].items()}}
        version_id = registry.register(adapter_dir, settings.default_adapter, principles=[p["id"] for p in carried],
                                       dataset_hash=data_hash, report={"gate_passed": passed_all, "principles": summary},
                                       notes=f"refinement job {job['id']}", actor=f"job:{job['id']}")
    report_paths = {pid: str(work / "reports" / key / pid / "report.md") for pid in reports}
    if corrections_report is not None:
        report_paths["corrections"] = str(work / "reports" / key / "corrections" / "report.md")
    state = {"version": version_id, "principles": [p["id"] for p in carried], "new": [p["id"] for p in new],
             "corrections": corrections["ids"], "corrections_seen": corrections.get("seen", []),
             "complaints": corrections.get("complaints", []), "complaints_seen": corrections.get("complaints_seen", []),
             "gate_passed": passed_all, "dataset_hash": data_hash,
             "data": {"principles": {pid: d.counts for pid, d in datasets.items()}, "corrections": corrections["counts"],
                      "complaints": {**corrections.get("complaint_counts", {}), "review": store.refinements.counts()},
                      "thumbs": {**thumbs["counts"], "kto_weights": thumbs["weights"]}},
             "reports": report_paths}
    write_atomic(marker, json.dumps(state))
    return _after_registration(settings, book, registry, job, state)


def _after_registration(settings: Settings, book: PrincipleBook, registry: Registry, job: dict, state: dict) -> dict:
    """Steps after registration, safe to run again: the principles point at the version, and a
    candidate that passed its gate is canaried or promoted as REFINERY_PROMOTION says, through the
    rollout (shapes checked against the served base model before anything switches)."""
    version_id, passed_all, actor = state["version"], state["gate_passed"], f"job:{job['id']}"
    for pid in state["new"]:
        book.mark_distilled(pid, version_id, actor)
    book.store.corrections.mark_distilled(state.get("corrections_seen", []), version_id)
    book.store.refinements.mark_distilled(state.get("complaints_seen", []), version_id)
    status = registry.show(version_id).status
    action = "left as candidate"
    rollout = Lifecycle.offline(registry)
    if not passed_all:
        action = "left as candidate: gate failed"
    elif status != "candidate":
        action = f"already {status}"
    elif settings.promotion == "auto-canary":
        rollout.canary(version_id, settings.auto_canary_share, actor=actor, reason="passed its gate")
        action = f"canary at {settings.auto_canary_share:.0%}"
    elif settings.promotion == "auto-promote":
        rollout.promote(version_id, actor=actor, reason="passed its gate")
        action = "promoted"
    return {"version": version_id, "principles": state["principles"], "new": state["new"],
            "corrections": state.get("corrections", []), "complaints": state.get("complaints", []), "gate_passed": passed_all, "action": action, "dataset_hash": state["dataset_hash"],
            "data": state["data"], "reports": state["reports"]}
