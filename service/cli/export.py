"""`refinery export`: feedback joined with its exchange, and preference pairs (TRL format), as JSON lines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from service.cli.common import DataDir, fail, settings as make_settings
from service.learn.export import export as run_export
from service.store import Store


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        out: Path = typer.Option(Path("export"), help="Directory for feedback.jsonl and preferences.jsonl."),
        data_dir: Optional[Path] = DataDir,
    ):
        """Write feedback joined with its exchange, and preference pairs (TRL format), as JSON lines."""
        settings = make_settings(data_dir)
        if not settings.db_path.exists():
            fail(f"no database at {settings.db_path}")
        counts = run_export(Store(settings.db_path), out)
        typer.echo(f"wrote {counts['feedback']} feedback records to {out / 'feedback.jsonl'} "
                   f"and {counts['preferences']} preference pairs to {out / 'preferences.jsonl'}")
