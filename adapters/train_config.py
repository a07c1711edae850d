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
    sft_weight: float = _f(1.0, "Weight of the NLL (mean per token) of the chosen answers beside DPO (RPO; TRL's "
                           "loss_type=['sigmoid', 'sft']): DPO alone may lower both answers' likelihood and break "
                           "the model; 0 turns it off.")
    constraint_weight: float = _f(0.06, "Weight of a constraint row that gives none (the refinement job's "
                                  "out-of-scope weight).")
    constraint_reduction: str = _f("sum", "Constraint NLL per row: 'sum' over the answer tokens (DPO's scale, "
                                   "so a changed first token costs what DPO gains from it) or 'mean' per token "
                                   "(the C3PO paper's; see adapters.losses.constraint_nll).")
    kto_weight: float = _f(1.0, "Weight of the KTO term on unpaired answers (thumbs without a pair).")
    kto_desirable_weight: float = _f(1.0, "KTO's lambda_D: the weight of a thumbs-up answer.")
    kto_undesirable_weight: float = _f(1.0, "KTO's lambda_U: the weight of a thumbs-down answer (the paper keeps "
                                       "lambda_D n_D / (lambda_U n_U) between 1 and 4/3).")
    guard_every: int = _f(8, "Check drift and degeneration every this many steps, and after the last (0: never).")
    drift_limit: float = _f(0.35, "Stop when this share of the base model's answer tokens on held-out general "
                            "prompts are no longer the adapter's first choice (adapters.guard).")
    allow_drift: bool = _f(False, "Record a drift or degeneration past the limits and train on instead of stopping.")
    guard_prompts: int = _f(8, "Held-out general prompts the drift is measured on.")
    guard_tokens: int = _f(32, "Tokens of each base answer the drift is measured on, and of the answers checked "
                           "for degeneration.")
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
        if not 0 < self.drift_limit <= 1:
            raise ValueError("drift_limit is a share of tokens, in (0, 1]")
        if self.sft_weight < 0 or self.guard_every < 0:
            raise ValueError("sft_weight and guard_every must be >= 0")
        for name in ("epochs", "rank", "pairs_per_step", "max_length", "max_prompt_length", "guard_prompts",
                     "guard_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be below max_length, or no answer token fits")


def config_help() -> dict[str, str]:
    """Field name -> help text of TrainConfig."""
    return {f.name: f.metadata.get("help", "") for f in fields(TrainConfig)}


