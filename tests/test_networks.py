"""The small CNN's max pooling: its no-autograd path must give nn.MaxPool2d's values, and with autograd
the gradient must go where nn.MaxPool2d sends it (the first maximal element of each window)."""

import pytest
import torch
import torch.nn as nn

from trainers.networks import MaxPool2x2


def windows_max_by_loops(x: torch.Tensor) -> torch.Tensor:
    """Brute force: each output is the max over its 2x2 window, an odd last row or column dropped."""
    n, c, h, w = x.shape
    out = torch.empty(n, c, h // 2, w // 2, dtype=x.dtype)
    for i in range(h // 2):
        for j in range(w // 2):
            out[:, :, i, j] = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].flatten(2).max(dim=2).values
    return out


@pytest.mark.parametrize("size", [(6, 6), (7, 5), (28, 28)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_grad_values_match_brute_force_and_max_pool(size, dtype):
    torch.manual_seed(0)
    x = torch.randn(3, 4, *size).relu().to(dtype)  # ReLU zeros make ties
    x[0, 0, :2, :2] = 0.5  # a window of four equal positive values
    with torch.no_grad():
        pooled = MaxPool2x2()(x)
    assert pooled.shape == (3, 4, size[0] // 2, size[1] // 2)
    assert torch.equal(pooled, windows_max_by_loops(x))
    assert torch.equal(pooled, nn.MaxPool2d(2)(x))


def test_nan_propagates_like_max_pool():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 0] = float("nan")
    with torch.no_grad():
        pooled = MaxPool2x2()(x)
    assert pooled[0, 0, 0, 0].isnan() and not pooled[0, 0, 1:, :].isnan().any()
    assert nn.MaxPool2d(2)(x)[0, 0, 0, 0].isnan()


def test_gradient_goes_to_the_first_maximum_of_each_window():
    x = torch.tensor([[[[1.0, 1.0, 0.0, 2.0],
                        [1.0, 0.5, 2.0, 2.0],
                        [3.0, 0.0, 0.0, 0.0],
                        [0.0, 0.0, 0.0, 4.0]]]], requires_grad=True)
    MaxPool2x2()(x).sum().backward()
    expected = torch.tensor([[[[1.0, 0.0, 0.0, 1.0],   # ties at 1 and 2: the first in row-major order
                               [0.0, 0.0, 0.0, 0.0],
                               [1.0, 0.0, 0.0, 0.0],
                               [0.0, 0.0, 0.0, 1.0]]]])
    assert torch.equal(x.grad, expected)
