"""`refinery refinements list|accept|reject`: the better answers the background analyst sampled for
users' complaints (DRIFT), which train only once an operator accepts them (as sampled, or with an
answer of their own), and the operator's verdict on each, from a terminal. Only the store is called
(service.store.refinements), as the API's routes and the review page do."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from policies.text import last_user_text
from service.cli.common import Actor, DataDir, Reason, default_actor, echo_json, fail, one_line, store
from service.store.refinements import STATUSES

refinements = typer.Typer(help="Better answers sampled for complaints: list them, accept or reject one.",
                          no_args_is_help=True)

RefinementId = typer.Argument(..., help="The refinement (ref_...), as `refinements list` shows it.")


@refinements.command("list")
def list_(status: Optional[str] = typer.Option(None, help="proposed, unverified, accepted or rejected."),
          limit: int = typer.Option(50, help="How many, newest first."), data_dir: Optional[Path] = DataDir):
    """Refinements: id, status, how the answer was verified, request -> the better answer."""
    if status is not None and status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}")
    for r in store(data_dir).refinements.list(status, limit):
        typer.echo(f"{r['id']}  {r['status']:<10}  {r['method'] or '-':<12}  "
                   f"{one_line(last_user_text(r['messages'] or []), 50)} -> {one_line(r['candidate'], 60) or '-'}")


def _review(refinement_id: str, status: str, actor: Optional[str], reason: Optional[str],
            candidate: Optional[str], data_dir: Optional[Path]) -> None:
    try:
        row = store(data_dir).refinements.review(refinement_id, status, actor or default_actor(), reason, candidate)
    except ValueError as exc:
        fail(str(exc))
    if row is None:
        fail(f"no refinement with id '{refinement_id}'", 2)
    echo_json({k: v for k, v in row.items() if k != "messages"} | {"request": last_user_text(row["messages"] or [])})


@refinements.command()
def accept(refinement_id: str = RefinementId,
           answer: Optional[str] = typer.Option(None, "--answer", help="Your own better answer, instead of the sampled one."),
           answer_file: Optional[Path] = typer.Option(None, "--answer-file", exists=True, dir_okay=False,
                                                      help="Read your better answer from this file."),
           reason: Optional[str] = Reason, actor: Optional[str] = Actor, data_dir: Optional[Path] = DataDir):
    """Accept a refinement: the refinement job trains on it (the better answer over ours). An
    unverified one needs --answer or --answer-file."""
    if answer is not None and answer_file is not None:
        fail("give --answer or --answer-file, not both")
    if answer_file is not None:
        answer = answer_file.read_text(encoding="utf-8")
    _review(refinement_id, "accepted", actor, reason, answer, data_dir)


@refinements.command()
def reject(refinement_id: str = RefinementId, reason: Optional[str] = Reason, actor: Optional[str] = Actor,
           data_dir: Optional[Path] = DataDir):
    """Reject a refinement: it never trains."""
    _review(refinement_id, "rejected", actor, reason, None, data_dir)


def register(app: typer.Typer) -> None:
    app.add_typer(refinements, name="refinements")
