"""`refinery generate` and `refinery train`: the two building blocks of adapter distillation.

Both take `--model` (default: the embedded model) and cache converted weights where the server
does (Settings.model_cache_dir: REFINERY_MODEL_CACHE, or `<REFINERY_DATA_DIR or ./data>/models`).
Errors in the input files print one line on stderr and exit with status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from service.cli.common import fail as _fail, settings


def model_cache_dir() -> Path:
    return settings().model_cache_dir


MODEL_HELP = "Base model: a local directory or hub id (default: the embedded SmolLM2-135M-Instruct)."


def generate_cmd(
    prompts: Path = typer.Option(..., "--prompts", help='JSONL, one {"prompt": ...} or {"messages": [...]} per line.'),
    out: Path = typer.Option(..., "--out", help='JSONL written: each input row plus "response".'),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="LoRA adapter directory applied on the base model."),
    system: Optional[str] = typer.Option(None, "--system", help="System message put before every conversation."),
    max_tokens: int = typer.Option(128, "--max-tokens", min=1, help="New tokens per answer at most."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Prompts per forward batch."),
    model: Optional[str] = typer.Option(None, "--model", help=MODEL_HELP),
    everywhere: bool = typer.Option(False, "--everywhere", help="Put the adapter on every prompt, also those "
                                    "outside the scope.json beside it (which the server answers with the base weights)."),
) -> None:
    """Greedy answers to a JSONL file of prompts, batched, with the chat template; with an adapter,
    as the server answers them (the base weights outside the adapter's scope.json)."""
    from adapters.generate import generate_file

    if not prompts.is_file():
        _fail(f"{prompts}: no such file")
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        _fail(f"{adapter}: not an adapter directory (no adapter_config.json)")
    try:
        n = generate_file(prompts, out, model, model_cache_dir(), adapter=adapter, system=system,
                          max_new_tokens=max_tokens, batch_size=batch_size, everywhere=everywhere,
                          encoder=settings().encoder)
    except ValueError as e:
        _fail(str(e))
    typer.echo(f"wrote {n} responses to {out}", err=True)


def train_cmd(
    preferences: Optional[Path] = typer.Option(None, "--preferences", help='JSONL of {"prompt", "chosen", "rejected"}.'),
    unpaired: Optional[Path] = typer.Option(
        None, "--unpaired", help='JSONL of {"prompt", "completion", "label": true|false} (thumbs without a pair: KTO).'),
    constraint: Optional[Path] = typer.Option(
        None, "--constraint", help='JSONL of {"prompt", "completion", "weight"?}; without it, plain DPO.'),
    out: Path = typer.Option(..., "--out", help="Adapter directory to write."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Passes over the pairs (default 3)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default 5e-4)."),
    beta: Optional[float] = typer.Option(None, "--beta", help="DPO beta (default 0.1)."),
    rank: Optional[int] = typer.Option(None, "--rank", min=1, help="LoRA rank (default 16)."),
    alpha: Optional[int] = typer.Option(None, "--alpha", min=1, help="LoRA alpha (default 32)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed (default 0)."),
    constraint_reduction: Optional[str] = typer.Option(
        None, "--constraint-reduction", help="Constraint NLL per row: 'sum' over its tokens (default, the "
        "refinement job's) or 'mean' per token."),
    sft_weight: Optional[float] = typer.Option(None, "--sft-weight", help="Weight of the chosen answers' NLL (default 1.0; 0: plain DPO)."),
    drift_limit: Optional[float] = typer.Option(None, "--drift-limit", help="Stop past this drift (default 0.35)."),
    allow_drift: bool = typer.Option(False, "--allow-drift", help="Train on past the drift and degeneration limits."),
    model: Optional[str] = typer.Option(None, "--model", help=MODEL_HELP),
) -> None:
    """Train a LoRA adapter: DPO + NLL on the chosen answers, KTO on unpaired answers, weighted NLL on the constraint completions,
    and a guard that stops a run that drifts or degenerates (exit status 3, no adapter written)."""
    from adapters.guard import TrainingStopped
    from adapters.train import train_files
    from adapters.train_config import TrainConfig

    if preferences is None and unpaired is None:
        _fail("give --preferences, --unpaired or both")
    for path in (preferences, constraint, unpaired):
        if path is not None and not path.is_file():
            _fail(f"{path}: no such file")
    # Only the options given override the dataclass, so its defaults stay the one source.
    given = dict(epochs=epochs, lr=lr, beta=beta, rank=rank, alpha=alpha, seed=seed,
                 constraint_reduction=constraint_reduction, sft_weight=sft_weight, drift_limit=drift_limit,
                 allow_drift=allow_drift or None)
    try:
        cfg = TrainConfig(model=model, **{k: v for k, v in given.items() if v is not None})
        result = train_files(cfg, preferences, constraint, out, model_cache_dir(), unpaired_path=unpaired)
    except ValueError as e:
        _fail(str(e))
    except TrainingStopped as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(3)
    worst = max((c["drift"] for c in result.guard or [] if "drift" in c), default=None)
    typer.echo(
        f"trained {result.steps} steps in {result.seconds:.1f} s ({result.pairs_per_second:.2f} pairs/s); "
        f"last-epoch loss {result.final_loss:.4f} (DPO {result.final_dpo:.4f}, NLL {result.final_nll:.4f}), "
        f"accuracy {result.final_accuracy:.2f}"
        + (f"; drift at most {worst:.2f}" if worst is not None else "") + f"; adapter in {result.out_dir}"
    )


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_cmd)
    app.command("train")(train_cmd)
