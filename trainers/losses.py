"""Losses as plain functions of similarities."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def margin_nce(positive: torch.Tensor, negatives: torch.Tensor, margin: float, temperature: float) -> torch.Tensor:
    """InterCLR's MarginNCE: cross-entropy over [(cos(v, v+) - m) / tau, cos(v, v-_1) / tau, ...].

    positive: B cosine similarities to the positive; negatives: B x K to the negatives.
    The margin applies to the positive only; m = 0 is exactly InfoNCE. A positive margin asks the
    positive to beat the negatives by m (a harder decision), a negative one relaxes it.
    """
    logits = torch.cat([(positive - margin).unsqueeze(1), negatives], dim=1) / temperature
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)
