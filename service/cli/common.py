"""What every command group shares: the `--data-dir`, `--actor` and `--reason` options, the
settings and store they select, one way to fail (a line on stderr and an exit status), and how a
row is printed."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import NoReturn, Optional

import typer

from service.settings import Settings
from service.store import Store

DataDir = typer.Option(None, "--data-dir", help="Data directory (default REFINERY_DATA_DIR or ./data).")
Actor = typer.Option(None, "--actor", help="Who, for the audit log (default cli:$USER).")
Reason = typer.Option(None, "--reason", help="Why, for the audit log.")


def settings(data_dir: Optional[Path] = None, **overrides) -> Settings:
    given = {k: v for k, v in {"data_dir": data_dir, **overrides}.items() if v is not None}
    return Settings(**given)


def store(data_dir: Optional[Path] = None) -> Store:
    """The store of the data directory a command was given."""
    return Store(settings(data_dir).db_path)


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


def one_line(text: Optional[str], width: int) -> str:
    """`text` on one line, cut to `width` characters, for a listing."""
    return " ".join((text or "").split())[:width]
