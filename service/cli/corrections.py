"""`refinery corrections list|accept|reject`: the corrected answers users sent, which the refinement
job trains on unless an operator rejected them, and the operator's verdict on each, from a terminal.
Only the store is called (service.store.corrections), as the API's routes and the review page do."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from policies.text import last_user_text
from service.cli.common import Actor, DataDir, Reason, default_actor, echo_json, fail, one_line, store
from service.store.corrections import STATUSES

corrections = typer.Typer(help="Corrections users sent: list them, accept or reject one.", no_args_is_help=True)



@corrections.command("list")
def list_(status: Optional[str] = typer.Option(None, help="accepted or rejected."),
          limit: int = typer.Option(50, help="How many, newest first."), data_dir: Optional[Path] = DataDir):
    """Corrections: feedback id, status, the adapter version that learned it, request -> correction."""
    if status is not None and status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}")
    for r in store(data_dir).corrections.list(status, limit):
        typer.echo(f"{r['id']}  {r['status']:<8}  {r['distilled_version'] or '-':<16}  "
                   f"{one_line(last_user_text(r['messages'] or []), 50)} -> {one_line(r['correction'], 60)}")


def _review(feedback_id: str, status: str, actor: Optional[str], reason: Optional[str], data_dir: Optional[Path]):
    row = store(data_dir).corrections.review(feedback_id, status, actor or default_actor(), reason)
    if row is None:
        fail(f"no correction with feedback id '{feedback_id}'", 2)
    echo_json({k: v for k, v in row.items() if k != "messages"} | {"request": last_user_text(row["messages"] or [])})


@corrections.command()
def accept(feedback_id: str = typer.Argument(..., help="The feedback record that carries the correction."),
           reason: Optional[str] = Reason, actor: Optional[str] = Actor, data_dir: Optional[Path] = DataDir):
    """Accept a correction (undo a rejection): the refinement job trains on it."""
    _review(feedback_id, "accepted", actor, reason, data_dir)


@corrections.command()
def reject(feedback_id: str = typer.Argument(..., help="The feedback record that carries the correction."),
           reason: Optional[str] = Reason, actor: Optional[str] = Actor, data_dir: Optional[Path] = DataDir):
    """Reject a correction: it never trains."""
    _review(feedback_id, "rejected", actor, reason, data_dir)


def register(app: typer.Typer) -> None:
    app.add_typer(corrections, name="corrections")
