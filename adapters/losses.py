"""Loss functions for constrained preference training (C3PO): pure tensor code, no model.

Conventions shared by every function here:
- `logits` come from a causal LM over the whole sequence (prompt + answer), so the logits at
  position t predict the token at position t + 1.
- `labels` are the input ids; `loss_mask` is 1.0 on answer tokens and 0.0 on prompt and padding
  tokens, aligned with `labels` (the mask of the token being *predicted*).
- Sequence scores are sums of log-probabilities in nats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability the model gives each next token.

    Shapes: logits (batch, seq, vocab), labels (batch, seq) -> (batch, seq - 1); entry [b, t]
    is log p(labels[b, t + 1] | labels[b, :t + 1]).
    """
    # float32 log-softmax: in bf16 the sum over a 50k vocabulary loses the small differences
    # between chosen and rejected that DPO lives on.
    logp = F.log_softmax(logits[:, :-1, :].float(), dim=-1)
    return torch.gather(logp, 2, labels[:, 1:].unsqueeze(-1)).squeeze(-1)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Sum of log-probabilities of the answer tokens of each sequence.

    Shapes: logits (batch, seq, vocab), labels (batch, seq), loss_mask (batch, seq) -> (batch,).
    Prompt and padding tokens (mask 0) contribute nothing, whatever the labels there hold.
    """
    mask = loss_mask[:, 1:].to(torch.float32)
    return (token_logps(logits, labels) * mask).sum(-1)


def sequence_mean_nll(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per answer token of each sequence.

    Shapes: logits (batch, seq, vocab), labels (batch, seq), loss_mask (batch, seq) -> (batch,).
    A sequence without answer tokens scores 0 rather than NaN.
    """
    mask = loss_mask[:, 1:].to(torch.float32)
    total = -(token_logps(logits, labels) * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1.0)


@dataclass
class DPOOutput:
    """Per-example results of `dpo_loss`; every field has shape (batch,)."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor  # beta * (policy - reference) log-ratio of the chosen answer
    rejected_rewards: torch.Tensor
    margins: torch.Tensor  # chosen_rewards - rejected_rewards

    @property
    def accuracies(self) -> torch.Tensor:
        """1.0 where the chosen answer earns the higher implicit reward. Shape: (batch,)."""
        return (self.margins > 0).float()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> DPOOutput:
    """Direct Preference Optimisation loss (Rafailov et al., 2023), per example.

    loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))

    Shapes: each input (batch,) of summed answer log-probs (see `sequence_logps`); every output
    field (batch,). Rewards are detached: they are for logging, the gradient flows through loss.
    Example: (-1, -2, -1.5, -1.5) with beta 0.1 gives log-ratio margin 1.0, reward margin 0.1,
    loss log(1 + e^-0.1) = 0.6444.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    # logsigmoid instead of log(sigmoid(.)): stays finite for large negative margins.
    loss = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    chosen_rewards = (beta * chosen_logratios).detach()
    rejected_rewards = (beta * rejected_logratios).detach()
    return DPOOutput(loss=loss, chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards,
                     margins=chosen_rewards - rejected_rewards)


def kto_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor, beta: float,
    desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """Kahneman-Tversky Optimisation loss (Ethayarajh et al., 2024) for unpaired answers: a thumbs-up
    answer is pulled up, a thumbs-down one pushed down, each against a reference point.

    r = policy - ref (the answer's log-ratio); z = the batch's mean log-ratio, detached and
    floored at 0 (an estimate of KL(policy || ref): the paper's is over mismatched prompt-answer
    pairs, this one over the batch's own answers);
    loss = lambda_D (1 - sigmoid(beta (r - z))) for desirable answers,
           lambda_U (1 - sigmoid(beta (z - r))) for undesirable ones.

    Shapes: policy_logps, ref_logps (batch,) summed answer log-probs, desirable (batch,) bool ->
    (batch,). At r = z every answer costs lambda / 2.
    """
    r = policy_logps - ref_logps
    z = r.detach().mean().clamp(min=0.0) if r.numel() else r.new_zeros(())
    up = desirable_weight * (1 - torch.sigmoid(beta * (r - z)))
    down = undesirable_weight * (1 - torch.sigmoid(beta * (z - r)))
    return torch.where(desirable, up, down)


def constraint_nll(
    logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor, weights: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """Weighted NLL of constraint completions: the term that pins the adapter to its old answers.

    reduction "mean": each sequence's NLL is its *mean per answer token*, so a long and a short
    answer weigh the same and the term stays on the scale of a per-token loss (about 0.1-2 nats).
    reduction "sum": the sum over answer tokens, the scale DPO's sequence log-ratios live on; a
    change to one token (a marker put first) then costs as much here as DPO gains from it,
    instead of 1/length of it. Either way each sequence is multiplied by its weight and the
    batch is averaged, i.e. the weight is relative to one preference pair (see `combined_loss`).

    Shapes: logits (batch, seq, vocab), labels (batch, seq), loss_mask (batch, seq),
    weights (batch,) -> scalar. An empty batch gives 0.
    """
    if labels.shape[0] == 0:
        return logits.new_zeros((), dtype=torch.float32)
    if reduction == "mean":
        nll = sequence_mean_nll(logits, labels, loss_mask)
    elif reduction == "sum":
        nll = -sequence_logps(logits, labels, loss_mask)
    else:
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    return (weights.to(nll.dtype) * nll).mean()


def combined_loss(dpo_losses: torch.Tensor, weighted_nll: torch.Tensor | float) -> torch.Tensor:
    """The C3PO objective: mean DPO loss over the pairs plus the weighted constraint NLL.

    Shapes: dpo_losses (pairs,) from `dpo_loss(...).loss`, weighted_nll scalar from
    `constraint_nll` (or 0.0 for plain DPO) -> scalar. Both terms are means, as in the paper's
    E_in[DPO] + lambda * E_out[NLL], so the balance does not drift with the batch composition.
    """
    return dpo_losses.mean() + weighted_nll
