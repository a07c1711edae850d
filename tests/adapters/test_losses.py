"""The loss functions of adapters/losses.py on hand-computed numbers and against naive loops."""

from __future__ import annotations

import math

import pytest
import torch

from adapters.losses import combined_loss, constraint_nll, dpo_loss, sequence_logps, sequence_mean_nll


def test_dpo_loss_hand_computed():
    out = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), beta=0.1)
    # log-ratios: chosen +0.5, rejected -0.5 -> margin 1.0; beta x margin = 0.1
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-0.1)), abs=1e-6)
    assert out.loss.item() == pytest.approx(0.6444, abs=1e-4)
    assert out.chosen_rewards.item() == pytest.approx(0.05)
    assert out.rejected_rewards.item() == pytest.approx(-0.05)
    assert out.margins.item() == pytest.approx(0.1)  # reward margin = beta x log-ratio margin 1.0
    assert out.accuracies.item() == 1.0


def test_dpo_loss_per_example_and_symmetry():
    pc = torch.tensor([-1.0, -3.0, -2.0])
    pr = torch.tensor([-2.0, -1.0, -2.0])
    ref = torch.tensor([-1.5, -1.5, -2.0])
    out = dpo_loss(pc, pr, ref, ref, beta=0.5)
    assert out.loss.shape == (3,)
    # equal policy and reference: the loss is log 2 whatever beta
    assert out.loss[2].item() == pytest.approx(math.log(2))
    # preferring the rejected answer costs more than preferring the chosen one
    assert out.loss[1] > math.log(2) > out.loss[0]
    assert out.accuracies.tolist() == [1.0, 0.0, 0.0]
    # stays finite where log(sigmoid(x)) would underflow to -inf
    far = dpo_loss(torch.tensor([-1000.0]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]), beta=1.0)
    assert far.loss.item() == pytest.approx(1000.0)


def test_dpo_loss_gradient_raises_chosen_lowers_rejected():
    pc = torch.tensor([-1.0], requires_grad=True)
    pr = torch.tensor([-1.0], requires_grad=True)
    dpo_loss(pc, pr, torch.tensor([-1.0]), torch.tensor([-1.0]), beta=0.1).loss.sum().backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descent raises chosen, lowers rejected


def _naive_logps(logits, labels, mask):
    out = []
    for b in range(labels.shape[0]):
        total = 0.0
        for t in range(1, labels.shape[1]):
            if mask[b, t]:
                total += torch.log_softmax(logits[b, t - 1], dim=-1)[labels[b, t]].item()
        out.append(total)
    return torch.tensor(out)


def _batch(seed=0, batch=3, seq=7, vocab=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq, vocab, generator=g) * 3
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.zeros(batch, seq)
    mask[0, 3:] = 1  # prompt of 3 tokens
    mask[1, 1:5] = 1  # answer followed by padding
    mask[2, 6:] = 1  # one answer token
    return logits, labels, mask


def test_sequence_logps_matches_naive_loop():
    logits, labels, mask = _batch()
    got = sequence_logps(logits, labels, mask)
    assert got.shape == (3,)
    torch.testing.assert_close(got, _naive_logps(logits, labels, mask), atol=1e-5, rtol=1e-5)


def test_sequence_logps_ignores_masked_labels():
    logits, labels, mask = _batch()
    scrambled = labels.clone()
    scrambled[mask == 0] = (labels[mask == 0] + 1) % 11  # only prompt/padding labels change
    torch.testing.assert_close(sequence_logps(logits, scrambled, mask), sequence_logps(logits, labels, mask))


def test_constraint_nll_is_weighted_mean_of_per_token_means():
    logits, labels, mask = _batch()
    weights = torch.tensor([0.1, 0.2, 0.0])
    naive = -_naive_logps(logits, labels, mask)
    per_token = naive / torch.tensor([4.0, 4.0, 1.0])  # answer tokens per row
    expected = (weights * per_token).sum() / 3
    got = constraint_nll(logits, labels, mask, weights)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(sequence_mean_nll(logits, labels, mask), per_token, atol=1e-5, rtol=1e-5)


def test_constraint_nll_hand_computed_uniform():
    # uniform logits over 4 tokens: every answer token costs log 4
    logits = torch.zeros(1, 3, 4)
    labels = torch.tensor([[0, 1, 2]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    assert constraint_nll(logits, labels, mask, torch.tensor([0.5])).item() == pytest.approx(0.5 * math.log(4))
    empty = constraint_nll(torch.zeros(0, 3, 4), torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3), torch.zeros(0))
    assert empty.item() == 0.0


def test_combined_loss():
    dpo = torch.tensor([0.6, 0.8])
    assert combined_loss(dpo, torch.tensor(0.3)).item() == pytest.approx(1.0)
    assert combined_loss(dpo, 0.0).item() == pytest.approx(0.7)


def test_constraint_nll_sum_counts_every_token():
    """'sum' is the per-token mean times the answer length; 'mean' does not grow with length."""
    from adapters.losses import constraint_nll

    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.randint(0, 11, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]], dtype=torch.float32)
    w = torch.tensor([1.0, 1.0])
    per_row_mean = [constraint_nll(logits[i:i + 1], labels[i:i + 1], mask[i:i + 1], w[:1]) for i in range(2)]
    per_row_sum = [constraint_nll(logits[i:i + 1], labels[i:i + 1], mask[i:i + 1], w[:1], "sum") for i in range(2)]
    for m, s, n in zip(per_row_mean, per_row_sum, (4, 2)):
        assert torch.isclose(s, m * n)
    assert torch.isclose(constraint_nll(logits, labels, mask, w, "sum"), (per_row_sum[0] + per_row_sum[1]) / 2)
    with pytest.raises(ValueError):
        constraint_nll(logits, labels, mask, w, "max")


def test_kto_loss_values_and_direction():
    from adapters.losses import kto_loss

    ref = torch.tensor([-10.0, -10.0])
    policy = torch.tensor([-10.0, -10.0], requires_grad=True)
    loss = kto_loss(policy, ref, torch.tensor([True, False]), beta=0.1, desirable_weight=1.0, undesirable_weight=2.0)
    assert torch.allclose(loss, torch.tensor([0.5, 1.0]))  # at r = z, lambda / 2
    loss.sum().backward()
    assert policy.grad[0] < 0 < policy.grad[1]  # descent raises the liked answer, lowers the disliked one
    # the reference point is the batch's mean log-ratio, floored at 0
    far = kto_loss(torch.tensor([-8.0, -8.0]), ref, torch.tensor([True, True]), beta=1.0)
    assert torch.allclose(far, torch.full((2,), 0.5))  # r = z = 2: no gain from moving everything up
