import math

import pytest
import torch
import torch.nn.functional as F

from trainers.losses import margin_nce, softmax_cross_entropy


def brute_force_info_nce(positive, negatives, temperature):
    """-log(exp(p/t) / (exp(p/t) + sum_k exp(n_k/t))), averaged over the batch, one row at a time."""
    total = 0.0
    for p, ns in zip(positive.tolist(), negatives.tolist()):
        numerator = math.exp(p / temperature)
        total += -math.log(numerator / (numerator + sum(math.exp(n / temperature) for n in ns)))
    return total / len(positive)


def test_zero_margin_is_info_nce():
    generator = torch.Generator().manual_seed(0)
    query = F.normalize(torch.randn(6, 8, generator=generator), dim=1)
    keys = F.normalize(torch.randn(6, 5, 8, generator=generator), dim=2)
    positive, negatives = (query * keys[:, 0]).sum(1), torch.einsum("bd,bkd->bk", query, keys[:, 1:])
    expected = brute_force_info_nce(positive, negatives, 0.1)
    assert math.isclose(float(margin_nce(positive, negatives, 0.0, 0.1)), expected, rel_tol=1e-5)


def test_hand_computed_value_with_margin():
    # One query: positive 0.5, negatives 0.2 and -0.1, margin 0.25, tau 0.5.
    # logits = [(0.5 - 0.25) / 0.5, 0.2 / 0.5, -0.1 / 0.5] = [0.5, 0.4, -0.2]
    expected = -0.5 + math.log(math.exp(0.5) + math.exp(0.4) + math.exp(-0.2))
    loss = margin_nce(torch.tensor([0.5]), torch.tensor([[0.2, -0.1]]), 0.25, 0.5)
    assert math.isclose(float(loss), expected, rel_tol=1e-6)


def test_margin_moves_loss_and_only_touches_the_positive():
    positive, negatives = torch.tensor([0.3, 0.6]), torch.tensor([[0.1, 0.2], [0.0, -0.4]])
    losses = [float(margin_nce(positive, negatives, m, 0.2)) for m in (-0.5, -0.25, 0.0, 0.25, 0.5)]
    assert losses == sorted(losses) and len(set(losses)) == 5  # a larger margin is a harder decision
    # A margin m equals shifting the positive similarity down by m with no margin.
    assert math.isclose(float(margin_nce(positive, negatives, 0.25, 0.2)),
                        float(margin_nce(positive - 0.25, negatives, 0.0, 0.2)), rel_tol=1e-6)


def test_softmax_cross_entropy_matches_the_hand_value_and_torchs():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([0, 2])
    # -log(e^2 / (e^2 + 2)) and -log(1 / 3), averaged
    expected = (-math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(3)) / 2
    assert softmax_cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    random = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    ours = softmax_cross_entropy(random, labels)
    (gradient,) = torch.autograd.grad(ours, random)
    assert ours.item() == pytest.approx(torch.nn.functional.cross_entropy(random, labels).item(), rel=1e-6)
    expected_gradient = (torch.softmax(random, 1) - torch.nn.functional.one_hot(labels, 5)) / 7
    assert torch.allclose(gradient, expected_gradient, atol=1e-6)
