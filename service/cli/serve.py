"""`refinery serve`: the API on uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from service.cli.common import settings as make_settings


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

        settings = make_settings(data_dir, host=host, port=port, model=model)
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)
