"""The training run's configuration: every knob of `adapters.train.train`, with its help text.

Saved next to each adapter as training_config.json; `refinery train` reads its options from here,
and the refinement job's overrides are checked against it when a job is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

# The Llama projection modules: every linear layer of the blocks. lm_head stays frozen (it is
# tied to the embeddings in SmolLM2, and adapting it rewrites the whole vocabulary's scores).
LLAMA_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _f(default, help: str, **kw):
    """A dataclass field carrying its help text (read by `config_help`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    """Every knob of a training run; saved next to the adapter as training_config.json."""

    model: str | None = _f(None, "Base model: a local directory, a hub id, or None for the embedded model.")
    epochs: int = _f(3, "Passes over the preference pairs.")
    lr: float = _f(5e-4, "AdamW learning rate of the LoRA weights (high for LoRA on a small data set).")
    lr_schedule: str = _f("constant", "'constant' or 'cosine' (to 10% of lr at the last step), after warmup.")
    warmup_steps: int = _f(0, "Steps of linear warmup from 0 to lr.")
    beta: float = _f(0.1, "DPO temperature: how far the policy may move from the reference.")
    rank: int = _f(16, "LoRA rank r.")
    alpha: int = _f(32, "LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = _f(0.0, "LoRA dropout (0 keeps step 0 exactly equal to the reference).")
    target_modules: list = _f(LLAMA_LINEAR_MODULES, "Module names LoRA wraps: all linear layers but lm_head.")
    pairs_per_step: int = _f(1, "Preference pairs per optimiser step.")
    constraint_weight: float = _f(0.2, "Weight of a constraint row that gives none.")
    constraint_reduction: str = _f("mean", "Constraint NLL per row: 'mean' per answer token or 'sum' over "
                                   "them (DPO's scale; see adapters.losses.constraint_nll).")
    max_length: int = _f(512, "Longest prompt + answer in tokens; answers beyond it are cut.")
    max_prompt_length: int = _f(384, "Longest prompt in tokens; longer prompts keep their end.")
    grad_clip: float = _f(1.0, "Clip the gradient norm to this (0 turns clipping off).")
    seed: int = _f(0, "Seed for the LoRA initialisation and the data order.")
    device: str = _f("auto", "'auto' (CUDA + bf16 when present, CPU float32 otherwise), 'cpu' or 'cuda'.")

    def __post_init__(self):
        if self.constraint_reduction not in ("mean", "sum"):
            raise ValueError(f"constraint_reduction must be 'mean' or 'sum', not {self.constraint_reduction!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', not {self.lr_schedule!r}")
        for name in ("epochs", "rank", "pairs_per_step", "max_length", "max_prompt_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be below max_length, or no answer token fits")


def config_help() -> dict[str, str]:
    """Field name -> help text of TrainConfig."""
    return {f.name: f.metadata.get("help", "") for f in fields(TrainConfig)}


