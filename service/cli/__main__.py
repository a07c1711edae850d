"""`python -m service.cli`: the `refinery` command (the server starts refinement workers this way)."""

from service.cli import app

app()
