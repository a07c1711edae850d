"""The README documents every CLI command and HTTP route, and keeps its two set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

import typer

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def cli_commands(app: typer.Typer, prefix: str = "refinery") -> list[str]:
    found = []
    for cmd in app.registered_commands:
        name = cmd.name or cmd.callback.__name__.replace("_", "-").rstrip("-")
        found.append(f"{prefix} {name}")
    for group in app.registered_groups:
        found += cli_commands(group.typer_instance, f"{prefix} {group.name}")
    return found


def test_every_cli_command_is_documented():
    from service.cli import app

    commands = cli_commands(app)
    assert "refinery serve" in commands and "refinery adapters promote" in commands
    missing = []
    for command in commands:
        *group, leaf = command.split()
        # Either the full command, or the group with the leaf in a `a|b|c` list.
        listed = re.search(rf"{re.escape(' '.join(group))} [\w|\\]*\b{re.escape(leaf)}\b", README)
        if command not in README and not listed:
            missing.append(command)
    assert missing == []


def test_every_route_is_documented():
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(_env_file=None))
    routes = {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}
    routes.add(("GET", "/review"))  # a page, kept out of the API schema
    assert ("POST", "/v1/chat/completions") in routes and ("GET", "/admin/principles/{principle_id}") in routes

    def norm(text: str) -> str:  # path parameters are named differently in prose
        return re.sub(r"\{[^}]*\}", "{}", text)

    documented = {(m, norm(p)) for m, p in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`", README)}
    missing = [f"{m} {p}" for m, p in sorted(routes) if (m, norm(p)) not in documented]
    assert missing == []


def test_readme_gives_the_two_setup_commands_and_ci_runs_one():
    assert "bash scripts/serve.sh" in README and "bash scripts/test.sh" in README
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
