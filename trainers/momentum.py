"""Momentum (EMA) updates of a network from another, shared by every method that keeps one."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online for every parameter, in one foreach update.

    Buffers (batch-norm running statistics) are copied from the online network. The target / key
    networks train in train mode, so this matters only where they embed in eval mode (offline
    relabelling of a bank of their features); MoCo's reference code keeps the key encoder's own
    statistics instead, which this harness does not reproduce."""
    targets, onlines = list(target.parameters()), [p.detach() for p in online.parameters()]
    torch._foreach_mul_(targets, momentum)
    torch._foreach_add_(targets, onlines, alpha=1 - momentum)
    for target_buffer, online_buffer in zip(target.buffers(), online.buffers()):
        target_buffer.copy_(online_buffer)


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's schedule: base at the start, rising to 1 at the end (progress in [0, 1])."""
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2
