"""`refinery mine`: natural feedback in logged conversations (service.learn.mine does the work).

Bad input: a line that is not JSON, or has no list of messages, is reported on stderr with its
line number and skipped; the other lines are still mined and written, and the command then exits
with status 1, so a script notices. Exit status 0: every line read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from service.settings import Settings


def parse_teacher_args(pairs: list[str]) -> dict:
    """["model=gpt-4o-mini", "temperature=0"] -> {"model": "gpt-4o-mini", "temperature": 0};
    values are JSON when they parse as JSON, strings otherwise."""
    kwargs = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {kv!r}", param_hint="--teacher-arg")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


def mine(
    input: Path = typer.Option(..., "--input", "-i", exists=True, dir_okay=False, readable=True,
                               help='JSONL, one {"messages": [...]} conversation per line.'),
    output: Path = typer.Option(..., "--output", "-o", dir_okay=False,
                                help="JSONL written: one line per user turn that follows an assistant turn."),
    teacher: Optional[str] = typer.Option(None, "--teacher",
                                          help="None (default): rules only. 'local': the embedded/--model model "
                                               "(too small to be used unless --force-llm). Or a dotted LangChain "
                                               "chat model class, e.g. langchain_openai.ChatOpenAI."),
    teacher_arg: List[str] = typer.Option([], "--teacher-arg", metavar="KEY=VALUE",
                                          help="Constructor argument of the teacher class (repeatable; JSON values "
                                               "allowed)."),
    flr: bool = typer.Option(False, "--flr/--no-flr",
                             help="Score every judged answer's follow-up likelihood with --model and write it as "
                                  "\"flr\" (loads the model; about half a second per answer on one CPU core)."),
    flr_prior: bool = typer.Option(False, "--flr-prior/--no-flr-prior",
                                   help="With --flr, let the file's FLR quartiles move the reformulation threshold. "
                                        "Off by default: with the embedded 135M model it made the bench worse."),
    model: Optional[str] = typer.Option(None, "--model",
                                        help="Model for --flr and the local teacher: a directory or hub id "
                                             "(default: the embedded SmolLM2-135M-Instruct)."),
    model_cache: Optional[Path] = typer.Option(None, "--model-cache",
                                               help="Converted weights cache (default: REFINERY_MODEL_CACHE or "
                                                    "<REFINERY_DATA_DIR or ./data>/models)."),
    force_llm: bool = typer.Option(False, "--force-llm", help="Use the teacher even when it is the small local model."),
    retries: int = typer.Option(1, "--retries", min=0, help="Re-asks when the teacher's answer does not parse."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Answers per FLR batch."),
    detector: str = typer.Option("encoder", "--detector",
                                 help="Without a capable teacher: 'encoder' (the classifier on sentence-encoder features, "
                                      "fitted on the shipped corpus plus operators' labels in --data-dir) or 'rules'."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory whose operators' labels the "
                                            "classifier learns from (default REFINERY_DATA_DIR or ./data)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="Torch CPU threads when a model is loaded (default: cores - 1, at most 8)."),
) -> None:
    """Find natural feedback (corrections, complaints, thanks, rules) in logged conversations. Exit status 1 when some input lines were skipped (each reported on stderr); the other lines are still written."""
    from service.learn.mine import mine_file  # loads torch: only when mining
    from service.learn.natural import Classifiers
    from service.store import Store

    if detector not in ("encoder", "rules"):
        raise typer.BadParameter("'encoder' or 'rules'", param_hint="--detector")
    settings = Settings(**({"data_dir": data_dir} if data_dir else {}), natural_detector=detector,
                        **({"model_cache": model_cache} if model_cache else {}))
    store = Store(settings.db_path) if settings.db_path.exists() else None
    capable_teacher = teacher not in (None, "none", "local")
    classifier = None if capable_teacher else Classifiers(settings, store).current()
    report = mine_file(input, output, teacher=teacher, teacher_args=parse_teacher_args(teacher_arg),
                       use_flr=flr, flr_prior=flr_prior, model=model, model_cache=settings.model_cache_dir, force_llm=force_llm,
                       retries=retries, batch_size=batch_size, threads=threads, classifier=classifier)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.categories.items()))
    typer.echo(f"{report.turns} turns from {report.conversations} conversations written to {output}"
               + (f" ({counts})" if counts else ""), err=True)
    if report.llm_failures:
        typer.echo(f"{report.llm_failures} teacher answers never parsed: rule results written, with \"error\"",
                   err=True)
    if report.skipped:
        typer.echo(f"{len(report.skipped)} of {report.lines} lines skipped", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("mine")(mine)
