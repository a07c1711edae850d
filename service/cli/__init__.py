"""The `refinery` console command: one module per command group, each only parsing options and
calling the library (the store, the registry, the rollout, the refinement worker, adapters).

Heavy libraries (torch, transformers, the app) are imported inside the commands that need them,
so `refinery --help` and the registry commands start in a fraction of a second.
"""

from __future__ import annotations

import typer

from service.cli import (adapters, corrections, export, jobs, mine, natural, principles, refine, refinements, serve,
                         train)

app = typer.Typer(help="Refinery: a chat server that learns from what its users say.", no_args_is_help=True)

for _module in (serve, export, train, mine, natural, corrections, refinements, principles, adapters, refine, jobs):
    _module.register(app)
