"""The `refinery` console command."""

from __future__ import annotations

import typer

app = typer.Typer(help="Refinery: a chat server that learns from what its users say.", no_args_is_help=True)

# Command groups live in their own modules; each adds its commands to `app`.
from service import cli_adapters, cli_jobs, cli_mine, cli_principles, cli_serve, cli_train  # noqa: E402

for _module in (cli_serve, cli_train, cli_mine, cli_principles, cli_adapters, cli_jobs):
    _module.register(app)

if __name__ == "__main__":
    app()
