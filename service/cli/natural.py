"""`refinery natural list|label|retrain`: natural-feedback verdicts, operators' labels, and the
classifier refitted on the shipped corpus plus those labels, with its figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from service.cli.common import DataDir, default_actor, echo_json, fail, settings, store
from service.errors import APIError
from service.store import Store

natural = typer.Typer(help="Natural feedback: verdicts, operators' labels, the classifier.", no_args_is_help=True)


@natural.command("list")
def list_(category: Optional[str] = typer.Option(None, help="Only this category."),
          limit: int = typer.Option(50, help="How many, newest first."), data_dir: Optional[Path] = DataDir):
    """Recent verdicts on follow-up turns: follow-up request id, category, polarity, principle, turn."""
    for r in store(data_dir).natural.list(category, limit):
        typer.echo(f"{r['follow_up_id']}  {r['category']:<25} {r['polarity']:<8} {'rule' if r['principle'] else '    '}  "
                   f"{(r['labelled_by'] and 'labelled ') or ''}{r['user_turn'][:80]}")


@natural.command()
def label(follow_up_id: str = typer.Argument(..., help="The request whose user turn is labelled (its completion id)."),
          category: str = typer.Option(..., help="repeat_rephrase, aware_with_correction, aware_without_correction, "
                                                 "clarification, positive or none."),
          polarity: Optional[str] = typer.Option(None, help="Default: the category's."),
          principle: bool = typer.Option(False, "--principle/--no-principle", help="The turn states a standing rule."),
          actor: Optional[str] = typer.Option(None, "--actor", help="Who, for the record (default cli:$USER)."),
          data_dir: Optional[Path] = DataDir):
    """Correct the verdict on a follow-up turn; the classifier learns from it."""
    from service.learn.natural import relabel

    try:
        echo_json(relabel(store(data_dir), follow_up_id, category, polarity, principle, actor or default_actor()))
    except APIError as e:
        fail(e.message, 2 if e.status == 404 else 1)


@natural.command()
def retrain(eval_file: Optional[List[Path]] = typer.Option(None, "--eval", help="Labelled conversations to score on (repeat)."),
            data_dir: Optional[Path] = DataDir):
    """Refit the classifier on the shipped corpus plus operators' labels; print cross-validated figures
    and those of every --eval file, as JSON."""
    from service.learn.natural import retrain as run

    s = settings(data_dir)
    store = Store(s.db_path) if s.db_path.exists() else None
    typer.echo(json.dumps(run(s, store, eval_file or []), indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(natural, name="natural")
