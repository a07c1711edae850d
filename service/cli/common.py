"""What every command group shares: the `--data-dir` and `--actor` options, the settings they
select, and one way to fail (a line on stderr and an exit status)."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import NoReturn, Optional

import typer

from service.settings import Settings

DataDir = typer.Option(None, "--data-dir", help="Data directory (default REFINERY_DATA_DIR or ./data).")


def settings(data_dir: Optional[Path] = None, **overrides) -> Settings:
    given = {k: v for k, v in {"data_dir": data_dir, **overrides}.items() if v is not None}
    return Settings(**given)


def default_actor() -> str:
    """Who the audit log records for a command: cli:$USER."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli"


def fail(message: str, status: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(status)


def echo_json(row) -> None:
    typer.echo(json.dumps(row, indent=2, ensure_ascii=False, default=str))
