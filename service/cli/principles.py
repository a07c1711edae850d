"""`refinery principles list|show|add|approve|reject|edit|merge`: the review queue from a terminal.

Every action goes through service.learn.review.PrincipleBook, as the API's and the page's do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from service.cli.common import DataDir, echo_json as _echo, fail, settings
from service.learn.review import PrincipleBook, ReviewError
from service.store import Store

principles = typer.Typer(help="Review the principles proposed from user feedback.", no_args_is_help=True)

Actor = typer.Option(os.environ.get("USER", "cli"), "--actor", help="Who is acting (for the audit log).")


def _book(data_dir: Optional[Path]) -> PrincipleBook:
    return PrincipleBook(Store(settings(data_dir).db_path))


def _run(fn, *args):
    try:
        return fn(*args)
    except ReviewError as exc:
        fail(str(exc), 2 if exc.status == 404 else 1)


@principles.command("list")
def list_(
    status: Optional[str] = typer.Option(None, help="candidate, approved, rejected or merged."),
    min_support: Optional[int] = typer.Option(None, help="Only principles with at least this much evidence."),
    min_agreement: Optional[float] = typer.Option(None, help="Only principles whose agreement is at least this."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
    data_dir: Optional[Path] = DataDir,
):
    """List principles, most supported first."""
    rows = _run(_book(data_dir).list, status, min_support, min_agreement)
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r, ensure_ascii=False, default=str))
        return
    typer.echo(f"{'id':<36} {'status':<10} {'mode':<8} {'support':>7} {'agree':>6}  text")
    for r in rows:
        agree = "" if r["agreement"] is None else f"{r['agreement']:.2f}"
        typer.echo(f"{r['id']:<36} {r['status']:<10} {r['mode']:<8} {r['support']:>7} {agree:>6}  {r['text']}")


@principles.command()
def show(principle_id: str, data_dir: Optional[Path] = DataDir):
    """One principle with its evidence and audit trail."""
    book = _book(data_dir)
    p = _run(book.get, principle_id)
    _echo({**p, "evidence_detail": book.evidence(p), "audit": book.audit(principle_id)})


@principles.command()
def add(
    text: str = typer.Option(..., help="The rule, a short imperative."),
    domain: str = typer.Option(..., help='Where it applies ("all requests" for everywhere).'),
    effect: Optional[str] = typer.Option(None, help="What it changes (default: the text)."),
    check: Optional[List[str]] = typer.Option(None, "--check", help='A programmatic check, e.g. starts_with "Note:" (repeat).'),
    mode: str = typer.Option("prompt", help="prompt, adapter or both."),
    actor: str = Actor,
    data_dir: Optional[Path] = DataDir,
):
    """Write a principle yourself; it starts as a candidate."""
    _echo(_run(_book(data_dir).write_new, {"text": text, "domain": domain, "effect": effect, "checks": check or [],
                                           "mode": mode}, actor))


@principles.command()
def approve(principle_id: str, mode: Optional[str] = typer.Option(None, help="prompt, adapter or both."),
            actor: str = Actor, data_dir: Optional[Path] = DataDir):
    """Approve a principle (optionally setting how it is applied)."""
    _echo(_run(_book(data_dir).approve, principle_id, actor, mode))


@principles.command()
def reject(principle_id: str, reason: str = typer.Option(..., help="Why it is rejected (kept in the audit log)."),
           actor: str = Actor, data_dir: Optional[Path] = DataDir):
    """Reject a principle with a reason."""
    _echo(_run(_book(data_dir).reject, principle_id, actor, reason))


@principles.command()
def edit(
    principle_id: str,
    text: Optional[str] = typer.Option(None, help="The rule, a short imperative."),
    domain: Optional[str] = typer.Option(None, help="Where it applies."),
    effect: Optional[str] = typer.Option(None, help="What it changes."),
    check: Optional[List[str]] = typer.Option(None, "--check", help='A programmatic check, e.g. starts_with "Summary:" (repeat; replaces the list).'),
    mode: Optional[str] = typer.Option(None, help="prompt, adapter or both."),
    actor: str = Actor,
    data_dir: Optional[Path] = DataDir,
):
    """Edit a principle's text, scope, effect, checks or mode."""
    changes = {k: v for k, v in {"text": text, "domain": domain, "effect": effect, "checks": check, "mode": mode}.items()
               if v is not None}
    if not changes:
        typer.echo("error: nothing to change", err=True)
        raise typer.Exit(1)
    _echo(_run(_book(data_dir).update, principle_id, changes, actor))


@principles.command()
def merge(principle_id: str, into: str = typer.Option(..., help="The principle that absorbs this one."),
          actor: str = Actor, data_dir: Optional[Path] = DataDir):
    """Merge a near-duplicate into another principle (evidence and support move over)."""
    _echo(_run(_book(data_dir).merge, principle_id, into, actor))


def register(app: typer.Typer) -> None:
    app.add_typer(principles, name="principles")
