"""`refinery refine` (the refinement job) and `refinery jobs list|show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

jobs = typer.Typer(help="The refinement job queue.", no_args_is_help=True)
DataDir = typer.Option(None, "--data-dir", help="Data directory (default REFINERY_DATA_DIR or ./data).")


def _settings(data_dir: Optional[Path]):
    from service.settings import Settings

    return Settings(**({"data_dir": data_dir} if data_dir else {}))


def _queue(data_dir: Optional[Path]):
    from service.jobs import JobQueue
    from service.store import Store

    return JobQueue(Store(_settings(data_dir).db_path))


@jobs.command("list")
def list_(status: Optional[str] = typer.Option(None, help="queued, running, succeeded or failed."),
          data_dir: Optional[Path] = DataDir):
    """Jobs, newest first."""
    typer.echo(f"{'id':<37} {'status':<10} {'stage':<24} {'attempts':>8}  error")
    for j in _queue(data_dir).list(status):
        typer.echo(f"{j['id']:<37} {j['status']:<10} {(j['stage'] or ''):<24} {j['attempts']:>8}  {j['error'] or ''}")


@jobs.command()
def show(job_id: str, data_dir: Optional[Path] = DataDir):
    """One job with its result."""
    job = _queue(data_dir).get(job_id)
    if job is None:
        typer.echo(f"error: no job {job_id}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(job, indent=2, default=str))


def register(app: typer.Typer) -> None:
    @app.command()
    def refine(
        principle: Optional[List[str]] = typer.Option(None, "--principle", help="Only these principle ids (repeat); default: every approved adapter-mode principle not yet distilled."),
        params: Optional[str] = typer.Option(None, "--params", help='JSON overrides, e.g. \'{"synthesis": {"n_in_scope": 40}, "train": {"epochs": 2}, "gate": {"max_near_scope": 0.3}}\'.'),
        worker: bool = typer.Option(False, "--worker", help="Only run jobs already queued (what the server starts; cron runs plain `refinery refine`)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
        data_dir: Optional[Path] = DataDir,
    ):
        """Run the refinement job: synthesis -> training -> evaluation -> candidate adapter."""
        import logging

        from service.jobs import run_worker

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = _settings(data_dir)
        overrides = None
        if params:
            from service.refine import check_params

            try:
                overrides = check_params(json.loads(params))
            except (json.JSONDecodeError, ValueError) as e:
                typer.echo(f"error: --params: {e}", err=True)
                raise typer.Exit(2)
        if not worker:
            job = _queue(data_dir).enqueue(principle or None, requested_by="cli", params=overrides)
            typer.echo(f"queued {job['id']}")
        finished = run_worker(settings, progress=progress)
        for j in finished:
            typer.echo(f"{j['id']}: {j['status']}" + (f" ({j['error']})" if j["error"] else ""))
            if j["result"]:
                typer.echo(json.dumps(j["result"], indent=2, default=str))
        if not finished:
            typer.echo("nothing to run (another worker may be running a job: see `refinery jobs list`)")
        if any(j["status"] == "failed" for j in finished):
            raise typer.Exit(1)

    app.add_typer(jobs, name="jobs")
