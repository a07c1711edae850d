"""`refinery adapters ...`: the adapter registry from the command line.

Acts on `<data dir>/adapters`, the same registry a running server reads (it notices changes
within a second), so `promote` here swaps what the server serves. Status changes go through the
rollout's one path (service.rollout.lifecycle), which checks a version's weights and shapes
before anything switches. Registry errors print one line on stderr and exit with status 1; the
commands scripts parse print their result alone on stdout (`register` prints the new version id).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from adapters.registry import Registry, RegistryError
from service.cli.common import default_actor as _default_actor, fail as _fail, settings
from service.rollout.lifecycle import Lifecycle

adapters_app = typer.Typer(help="Versioned LoRA adapters: register, canary, promote, roll back.", no_args_is_help=True)

DATA_DIR_HELP = "Data directory (default REFINERY_DATA_DIR or ./data); the registry is its adapters/ folder."


def register(app: typer.Typer) -> None:
    app.add_typer(adapters_app, name="adapters")


def _registry(data_dir: Optional[Path], base_model: Optional[str] = None) -> Registry:
    root = (data_dir if data_dir is not None else settings().data_dir) / "adapters"
    try:
        return Registry(root, base_model_id=base_model)
    except (RegistryError, OSError) as e:
        _fail(str(e))


def _rollout(data_dir: Optional[Path]) -> Lifecycle:
    return Lifecycle.offline(_registry(data_dir))


def _run(fn, *args, **kwargs):
    """Call a registry operation, turning its errors into a message and exit status 1."""
    try:
        return fn(*args, **kwargs)
    except RegistryError as e:
        _fail(str(e))


def _print_changes(changes, target: str) -> None:
    if not changes:
        typer.echo(f"{target}: nothing changed")
    for c in changes:
        share = f" (share {c.share_after:g})" if c.share_after is not None else ""
        typer.echo(f"{c.version_id}: {c.before} -> {c.after}{share}")


DataDir = typer.Option(None, "--data-dir", help=DATA_DIR_HELP)
Actor = typer.Option(None, "--actor", help="Who to record in the audit log (default cli:$USER).")
Reason = typer.Option(None, "--reason", help="Why, for the audit log.")


@adapters_app.command("register")
def register_cmd(
    directory: Path = typer.Argument(..., help="Adapter directory (adapter_model.safetensors + adapter_config.json)."),
    name: str = typer.Option(..., "--name", help="Adapter name; versions are NAME@v1, NAME@v2, ..."),
    principle: List[str] = typer.Option([], "--principle", help="Id of a principle it distills (repeatable)."),
    dataset_hash: Optional[str] = typer.Option(None, "--dataset-hash", help="Hash of the training data set."),
    report: Optional[Path] = typer.Option(None, "--report", help="Evaluation report file to keep with it."),
    notes: Optional[str] = typer.Option(None, "--notes", help="Free text."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Base model it must fit (default: the one the server recorded)."),
    data_dir: Optional[Path] = DataDir,
    actor: Optional[str] = Actor,
):
    """Validate an adapter and add it as a candidate; prints NAME@vN."""
    reg = _registry(data_dir, base_model)
    version_id = _run(reg.register, directory, name, principles=principle, dataset_hash=dataset_hash,
                      report=report, notes=notes, actor=actor or _default_actor())
    typer.echo(version_id)


@adapters_app.command("promote")
def promote_cmd(version: str = typer.Argument(..., help="NAME@vN"), reason: Optional[str] = Reason,
                data_dir: Optional[Path] = DataDir, actor: Optional[str] = Actor):
    """Make a version active; the previous active version is retired."""
    _print_changes(_run(_rollout(data_dir).promote, version, actor=actor or _default_actor(), reason=reason), version)


@adapters_app.command("canary")
def canary_cmd(version: str = typer.Argument(..., help="NAME@vN"),
               share: float = typer.Option(..., "--share", help="Share of NAME's traffic, between 0 and 1 (e.g. 0.1)."),
               reason: Optional[str] = Reason, data_dir: Optional[Path] = DataDir, actor: Optional[str] = Actor):
    """Send a share of NAME's traffic to a version (replaces NAME's current canary)."""
    _print_changes(_run(_rollout(data_dir).canary, version, share, actor=actor or _default_actor(), reason=reason), version)


@adapters_app.command("rollback")
def rollback_cmd(name: str = typer.Argument(..., help="Adapter name"),
                 reject: bool = typer.Option(False, "--reject", help="Mark the rolled-back version rejected (never served again)."),
                 reason: Optional[str] = Reason, data_dir: Optional[Path] = DataDir, actor: Optional[str] = Actor):
    """End NAME's canary if one runs, otherwise bring back the previously active version."""
    _print_changes(_run(_rollout(data_dir).rollback, name, actor=actor or _default_actor(), reason=reason, reject=reject), name)


@adapters_app.command("retire")
def retire_cmd(version: str = typer.Argument(..., help="NAME@vN"), reason: Optional[str] = Reason,
               data_dir: Optional[Path] = DataDir, actor: Optional[str] = Actor):
    """Stop serving a version (it stays on disk and can be promoted again)."""
    _print_changes(_run(_rollout(data_dir).retire, version, actor=actor or _default_actor(), reason=reason), version)


@adapters_app.command("reject")
def reject_cmd(version: str = typer.Argument(..., help="NAME@vN"),
               reason: str = typer.Option(..., "--reason", help="Why, for the audit log."),
               data_dir: Optional[Path] = DataDir, actor: Optional[str] = Actor):
    """Reject a version for good; if it was active, the previously active one comes back."""
    _print_changes(_run(_rollout(data_dir).reject, version, reason, actor=actor or _default_actor()), version)


@adapters_app.command("list")
def list_cmd(name: Optional[str] = typer.Option(None, "--name", help="Only this adapter's versions."),
             as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
             data_dir: Optional[Path] = DataDir):
    """Every version: status, canary share, creation time, principles, base model."""
    versions = _run(_registry(data_dir).list, name)
    if as_json:
        typer.echo(json.dumps([v.to_dict() for v in versions], indent=2))
        return
    rows = [("VERSION", "STATUS", "SHARE", "CREATED", "PRINCIPLES", "BASE MODEL")]
    for v in versions:
        rows.append((v.version_id, v.status, f"{v.canary_share:g}" if v.canary_share is not None else "-",
                     v.created_at[:19].replace("T", " "), ",".join(v.principles) or "-", v.base_model or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
    if not versions:
        typer.echo("(no adapters registered)")


@adapters_app.command("show")
def show_cmd(version: str = typer.Argument(..., help="NAME@vN"), data_dir: Optional[Path] = DataDir):
    """Everything recorded about one version, as JSON."""
    typer.echo(json.dumps(_run(_registry(data_dir).show, version).to_dict(), indent=2))


@adapters_app.command("audit")
def audit_cmd(limit: int = typer.Option(20, "--limit", help="How many of the latest entries."),
              data_dir: Optional[Path] = DataDir):
    """The latest audit-log entries, one JSON object per line."""
    for entry in _registry(data_dir).audit(limit):
        typer.echo(json.dumps(entry, sort_keys=True))
