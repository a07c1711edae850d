"""`refinery serve` and `refinery export`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: Optional[str] = typer.Option(None, help="Bind address (default REFINERY_HOST or 127.0.0.1)."),
        port: Optional[int] = typer.Option(None, help="Port (default REFINERY_PORT or 8000)."),
        model: Optional[str] = typer.Option(None, help="Base model: local directory or hub id (default: embedded SmolLM2-135M-Instruct)."),
        data_dir: Optional[Path] = typer.Option(None, help="Data directory (default REFINERY_DATA_DIR or ./data)."),
        log_level: str = typer.Option("info", help="uvicorn log level."),
    ):
        """Serve the chat model over the OpenAI-compatible API."""
        import uvicorn

        from service.app import create_app
        from service.settings import Settings

        overrides = {k: v for k, v in {"host": host, "port": port, "model": model, "data_dir": data_dir}.items() if v is not None}
        settings = Settings(**overrides)
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)

    @app.command()
    def export(
        out: Path = typer.Option(Path("export"), help="Directory for feedback.jsonl and preferences.jsonl."),
        data_dir: Optional[Path] = typer.Option(None, help="Data directory (default REFINERY_DATA_DIR or ./data)."),
    ):
        """Write feedback joined with its exchange, and preference pairs (TRL format), as JSON lines."""
        from service.export import export as run_export
        from service.settings import Settings
        from service.store import Store

        settings = Settings(**({"data_dir": data_dir} if data_dir else {}))
        if not settings.db_path.exists():
            typer.echo(f"no database at {settings.db_path}", err=True)
            raise typer.Exit(1)
        counts = run_export(Store(settings.db_path), out)
        typer.echo(f"wrote {counts['feedback']} feedback records to {out / 'feedback.jsonl'} "
                   f"and {counts['preferences']} preference pairs to {out / 'preferences.jsonl'}")
