"""Commands registered on the `refinery` CLI (see service/cli.py)."""

import typer


def register(app: typer.Typer) -> None:
    pass
