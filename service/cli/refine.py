"""`refinery refine`: queue a refinement job and run it (or, with --worker, run the queued ones)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from service.cli.common import DataDir, fail, settings as make_settings


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

        from service.distill.recipe import check_params
        from service.distill.worker import run_worker
        from service.store import Store

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = make_settings(data_dir)
        overrides = None
        if params:
            try:
                overrides = check_params(json.loads(params))
            except (json.JSONDecodeError, ValueError) as e:
                fail(f"--params: {e}", 2)
        if not worker:
            job = Store(settings.db_path).jobs.enqueue(principle or None, requested_by="cli", params=overrides)
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
