"""One refinement job: approved adapter-mode principles -> C3PO data -> one LoRA adapter that
distils all of them -> evaluation per principle -> a registered candidate (and, if the gate
passes and the operator allows it, a canary or a promotion).

One adapter carries every approved adapter-mode principle, so a new version never drops a rule
an older version had learned. Each stage leaves its output on disk (data sets per principle,
keyed by the principle's content; the adapter, the reports and the registration in the job's
directory), and a resumed job skips every stage whose output is already there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from service.jobs import JobQueue
from service.review import PrincipleBook
from service.settings import Settings
from service.store import Store, atomic

log = logging.getLogger(__name__)


def principle_key(p: dict, synthesis: dict | None = None) -> str:
    """Changes when an operator edits what the principle says, or the synthesis settings change,
    so its data set is made again."""
    canon = json.dumps([p["text"], p["domain"], p["effect"], sorted(p["checks"] or []), synthesis or {}],
                       ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


# The refinement job's recipe where the operator's params say nothing. Measured on the gardening
# rule with the embedded model (10 held-out prompts per scope; README, Benchmarks, "C3PO"): with the paper's
# per-token NLL at 0.1 / 0.2 on 20 + 20 rows the marker leaked to 30-50 % of near- and
# out-of-scope answers, because a changed first token costs 1/length of a per-token mean.
# Minimal-edit pairs (chosen = the baseline repaired by the checks, so a pair differs by the
# rule alone), the NLL summed over the answer (the scale of DPO's log-ratios) at 0.03 / 0.06,
# and 40 + 40 constraint rows (baselines only: cheap) gave 80 % adherence and no leak.
RECIPE = {"synthesis": {"prefer_minimal_edit": True, "near_weight": 0.03, "out_weight": 0.06,
                        "n_near_scope": 40, "n_out_of_scope": 40},
          "train": {"constraint_reduction": "sum"}, "gate": {}}


def with_recipe(params: dict | None) -> dict:
    params = params or {}
    return {k: {**RECIPE[k], **params.get(k, {})} for k in RECIPE}


def check_params(params: dict | None) -> dict:
    """Job overrides {"synthesis": {...}, "train": {...}, "gate": {...}}, checked against the
    configs they feed, so a typo is refused when the job is queued rather than when it runs."""
    from adapters.evaluate import GateThresholds
    from adapters.train import TrainConfig
    from policies.synthesis import SynthesisConfig

    params = params or {}
    if not isinstance(params, dict) or not set(params) <= {"synthesis", "train", "gate"}:
        raise ValueError('params is an object with keys among "synthesis", "train" and "gate"')
    for key, cls in (("synthesis", SynthesisConfig), ("train", TrainConfig), ("gate", GateThresholds)):
        section = params.get(key, {})
        if not isinstance(section, dict):
            raise ValueError(f"params.{key} must be an object")
        known = set(TrainConfig.__dataclass_fields__) - {"model"} if key == "train" else set(cls.model_fields)
        unknown = set(section) - known
        if unknown:
            raise ValueError(f"params.{key}: unknown fields {sorted(unknown)}; known: {sorted(known)}")
        try:
            cls(**section)
        except Exception as e:  # pydantic ValidationError, dataclass TypeError/ValueError
            raise ValueError(f"params.{key}: {e}") from e
    return params


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
    out = []
    for r in store.db.query("SELECT messages FROM completions WHERE status = 'ok' ORDER BY created DESC LIMIT ?", [limit]):
        msgs = json.loads(r["messages"])
        last = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), None)
        if last and last not in out:
            out.append(last)
    return out


def refine_job(settings: Settings, store: Store, queue: JobQueue, job: dict, progress: bool = True) -> dict:
    from adapters.base import load_model
    from adapters.evaluate import GateThresholds, evaluate_adapter, gate
    from adapters.generate import generate
    from adapters.registry import Registry
    from adapters.train import TrainConfig, train
    from policies.synthesis import SynthesisConfig, SynthesisResult, synthesize
    from policies.teacher import build_teacher

    book = PrincipleBook(store)
    work = Path(settings.data_dir) / "jobs" / job["id"]
    registry = Registry(Path(settings.data_dir) / "adapters")
    marker = work / "registered.json"
    if marker.exists():
        # Resumed after the adapter was registered: only what follows registration is left.
        return _after_registration(settings, book, registry, job, json.loads(marker.read_text()))
    new, carried = select_principles(book, job["principle_ids"])
    if not new:
        return {"principles": [], "note": "no approved adapter-mode principle is waiting to be distilled"}
    params = with_recipe(job["params"])
    work.mkdir(parents=True, exist_ok=True)
    stage = lambda name: queue.beat(job["id"], name)  # noqa: E731

    # The served model answers the baselines: the base plus the version serving now.
    stage("load model")
    lm = load_model(settings.model, settings.model_cache_dir, settings.device)
    model, tok = lm.model, lm.tokenizer
    active = registry.active(settings.default_adapter)
    if active is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(active.path), adapter_name="serving")
        model.eval()

    new_ids = {p["id"] for p in new}

    def base_generate_fn(conversations: list[list[dict]], max_tokens: int) -> list[str]:
        with model.disable_adapter():
            return generate_fn(conversations, max_tokens)

    def generate_fn(conversations: list[list[dict]], max_tokens: int) -> list[str]:
        return generate(model, tok, conversations, max_new_tokens=max_tokens, batch_size=16, progress=progress)

    kwargs = json.loads(settings.teacher_args) if settings.teacher_args else {}
    teacher = build_teacher(settings.teacher, kwargs, generate_fn=lambda msgs, n: generate_fn([msgs], n)[0])
    syn_cfg = SynthesisConfig(**params.get("synthesis", {}))
    logged = logged_prompts(store)

    # 1. One data set per principle, kept across jobs while the principle says the same thing.
    datasets: dict[str, SynthesisResult] = {}
    for p in carried:
        ddir = Path(settings.data_dir) / "datasets" / p["id"] / principle_key(p, syn_cfg.model_dump())
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
        result = synthesize(p, gen, teacher, logged, syn_cfg,
                            on_stage=lambda s, pid=p["id"]: stage(f"synthesis {pid}: {s}"))
        result.write(ddir)
        with atomic(store.db):
            store.db["datasets"].upsert({"hash": result.content_hash, "created": time.time(), "principle_id": p["id"],
                                         "job_id": job["id"], "stats": json.dumps(result.counts),
                                         "path": str(ddir)}, pk="hash")
        datasets[p["id"]] = result
    if active is not None:
        model = model.unload()  # the plain base again, for training's reference and evaluation

    # One adapter learns every principle's rows, so no principle's held-out prompts may be
    # among another's training rows (its overgeneralisation would be measured on them).
    held_out = {q for d in datasets.values() if d.eval_prompts is not None
                for q in d.eval_prompts.in_scope + d.eval_prompts.near_scope + d.eval_prompts.out_of_scope}
    preferences = [row for d in datasets.values() for row in d.preferences if _prompt_text(row) not in held_out]
    constraints = [row for d in datasets.values() for row in d.constraints if _prompt_text(row) not in held_out]
    if not preferences:
        raise RuntimeError("no preference pair survived verification: " +
                           "; ".join(f"{pid}: {d.counts}" for pid, d in datasets.items()))
    data_hash = hashlib.sha256("".join(sorted(d.content_hash for d in datasets.values())).encode()).hexdigest()

    # 2. One adapter for every carried principle. Keyed by the data: a job resumed after a
    # principle was edited (new data sets) trains again rather than reusing the old adapter.
    key = data_hash[:16]
    adapter_dir = work / f"adapter-{key}"
    if not (adapter_dir / "loss_curve.json").exists():
        stage("train")
        cfg = TrainConfig(model=settings.model, **params.get("train", {}))
        trained = train(cfg, preferences, constraints, adapter_dir, settings.model_cache_dir, progress=progress)
        _write_atomic(work / f"train-{key}.json", json.dumps(trained.__dict__, default=str, indent=1))

    # 3. Evaluation per principle; the adapter is a candidate only if every principle passes.
    thresholds = GateThresholds(**params.get("gate", {}))
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
        # Held-out prompts where synthesis kept some back; otherwise the training prompts.
        has_eval = data.eval_prompts is not None and bool(data.eval_prompts.in_scope)
        report = evaluate_adapter(model, tok, adapter_dir, p, data.eval_prompts if has_eval else data.prompts,
                                  judge=teacher, progress=progress)
        verdict = gate(report, thresholds)
        report.write(rdir, verdict)
        reports[p["id"]] = json.loads((rdir / "report.json").read_text())
        passed_all &= verdict[0]

    # 4. Register (once, even if the job is resumed after this point: a version this job
    # registered from this data before a crash is found again rather than registered twice).
    stage("register")
    mine = [v for v in registry.list(settings.default_adapter)
            if v.created_by == f"job:{job['id']}" and v.dataset_hash == data_hash]
    if mine:
        version_id = mine[-1].version_id
    else:
        summary = {pid: {"gate": r["gate"], "table": [row for row in _table(r)]} for pid, r in reports.items()}
        version_id = registry.register(adapter_dir, settings.default_adapter, principles=[p["id"] for p in carried],
                                       dataset_hash=data_hash, report={"gate_passed": passed_all, "principles": summary},
                                       notes=f"refinement job {job['id']}", actor=f"job:{job['id']}")
    state = {"version": version_id, "principles": [p["id"] for p in carried], "new": [p["id"] for p in new],
             "gate_passed": passed_all, "dataset_hash": data_hash,
             "data": {pid: d.counts for pid, d in datasets.items()},
             "reports": {pid: str(work / "reports" / key / pid / "report.md") for pid in reports}}
    _write_atomic(marker, json.dumps(state))
    return _after_registration(settings, book, registry, job, state)


def _after_registration(settings: Settings, book: PrincipleBook, registry, job: dict, state: dict) -> dict:
    """Steps after registration, safe to run again: the principles point at the version, and a
    candidate that passed its gate is canaried or promoted as REFINERY_PROMOTION says."""
    version_id, passed_all, actor = state["version"], state["gate_passed"], f"job:{job['id']}"
    for pid in state["new"]:
        book.mark_distilled(pid, version_id, actor)
    status = registry.show(version_id).status
    action = "left as candidate"
    if not passed_all:
        action = "left as candidate: gate failed"
    elif status != "candidate":
        action = f"already {status}"
    elif settings.promotion == "auto-canary":
        registry.canary(version_id, settings.auto_canary_share, actor=actor, reason="passed its gate")
        action = f"canary at {settings.auto_canary_share:.0%}"
    elif settings.promotion == "auto-promote":
        registry.promote(version_id, actor=actor, reason="passed its gate")
        action = "promoted"
    return {"version": version_id, "principles": state["principles"], "new": state["new"],
            "gate_passed": passed_all, "action": action, "dataset_hash": state["dataset_hash"],
            "data": state["data"], "reports": state["reports"]}


def _prompt_text(row: dict) -> str:
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return prompt
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")


def _write_atomic(path: Path, text: str) -> None:
    """A crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _table(report: dict) -> list[dict]:
    rows = []
    for name, cond in report["conditions"].items():
        scopes = cond["scopes"]
        rows.append({"condition": name, **{k: scopes[k]["rate"] for k in ("in_scope", "near_scope", "out_of_scope")}})
    return rows
