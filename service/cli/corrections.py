"""`refinery corrections list|accept|reject`: the corrected answers users sent, which the refinement
job trains on unless an operator rejected them, and the operator's verdict on each, from a terminal.
Only the store is called (service.store.corrections), as the API's routes and the review page do."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from service.cli.common import DataDir, default_actor, echo_json, fail, settings
from service.store import Store
from service.store.corrections import STATUSES

corrections = typer.Typer(help="Corrections users sent: list them, accept or reject one.", no_args_is_help=True)

Actor = typer.Option(None, "--actor", help="Who, for the audit log (default cli:$USER).")
Reason = typer.Option(None, "--reason", help="Why, for the audit log.")


def _store(data_dir: Optional[Path]) -> Store:
    return Store(settings(data_dir).db_path)


def _request(row: dict) -> str:
    """The user turn the corrected answer answered."""
    return next((m["content"] for m in reversed(row["messages"] or []) if m.get("role") == "user"), "")


def _one_line(text: Optional[str], width: int) -> str:
    return " ".join((text or "").split())[:width]


@corrections.command("list")
def list_(status: Optional[str] = typer.Option(None, help="accepted or rejected."),
          limit: int = typer.Option(50, help="How many, newest first."), data_dir: Optional[Path] = DataDir):
    """Corrections: feedback id, status, the adapter version that learned it, request -> correction."""
    if status is not None and status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}")
    for r in _store(data_dir).corrections.list(status, limit):
        typer.echo(f"{r['id']}  {r['status']:<8}  {r['distilled_version'] or '-':<16}  "
                   f"{_one_line(_request(r), 50)} -> {_one_line(r['correction'], 60)}")


def _review(feedback_id: str, status: str, actor: Optional[str], reason: Optional[str], data_dir: Optional[Path]):
    row = _store(data_dir).corrections.review(feedback_id, status, actor or default_actor(), reason)
    if row is None:
        fail(f"no correction with feedback id '{feedback_id}'", 2)
    echo_json({k: v for k, v in row.items() if k != "messages"} | {"request": _request(row)})


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
