"""`refinery jobs list|show`: the refinement job queue from a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from service.cli.common import DataDir, echo_json, fail, store

jobs = typer.Typer(help="The refinement job queue.", no_args_is_help=True)


@jobs.command("list")
def list_(status: Optional[str] = typer.Option(None, help="queued, running, succeeded or failed."),
          data_dir: Optional[Path] = DataDir):
    """Jobs, newest first."""
    typer.echo(f"{'id':<37} {'status':<10} {'stage':<24} {'attempts':>8}  error")
    for j in store(data_dir).jobs.list(status):
        typer.echo(f"{j['id']:<37} {j['status']:<10} {(j['stage'] or ''):<24} {j['attempts']:>8}  {j['error'] or ''}")


@jobs.command()
def show(job_id: str, data_dir: Optional[Path] = DataDir):
    """One job with its result."""
    job = store(data_dir).jobs.get(job_id)
    if job is None:
        fail(f"no job {job_id}", 2)
    echo_json(job)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs, name="jobs")
