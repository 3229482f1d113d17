"""Similarities of unit-norm embeddings, and the losses as plain functions of them."""

from __future__ import annotations

import torch

from trainers.errors import ConfigError


def cosine(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """B x D, B x D -> B (both unit norm)."""
    return (query * keys).sum(dim=1)


def cosine_many(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """B x D, B x K x D -> B x K."""
    return torch.einsum("bd,bkd->bk", query, keys)


def margin_nce(positive: torch.Tensor, negatives: torch.Tensor, margin: float, temperature: float) -> torch.Tensor:
    """InterCLR's MarginNCE: cross-entropy over [(cos(v, v+) - m) / tau, cos(v, v-_1) / tau, ...].

    positive: B cosine similarities to the positive; negatives: B x K to the negatives.
    The margin applies to the positive only; m = 0 is exactly InfoNCE. A positive margin asks the
    positive to beat the negatives by m (a harder decision), a negative one relaxes it.
    """
    logits = torch.cat([(positive - margin).unsqueeze(1), negatives], dim=1) / temperature
    # Cross-entropy with the positive at index 0, written out: unlike CUDA's NLL kernel it has a
    # deterministic backward, so `deterministic=true` trials can run it.
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def softmax_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of B x C logits against B class indices, written with a one-hot mask: CUDA's
    NLL kernel (under F.cross_entropy) and gather's backward have no deterministic implementation, so
    `deterministic=true` trials could not run them."""
    chosen = (logits * torch.nn.functional.one_hot(targets, logits.shape[1]).to(logits.dtype)).sum(dim=1)
    return (torch.logsumexp(logits, dim=1) - chosen).mean()


def truncated_triplet(query: torch.Tensor, targets: torch.Tensor, rule: str, rank: int, gamma: float,
                      margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The truncated triplet loss of Wang et al. (2021) over a batch, each query's deputies, and the share
    of queries whose loss sits at the bound C (no gradient reaches them).

    query: B x D online predictions, targets: B x D target projections, both unit norm; query i's
    positive is target i, its m = B - 1 negatives the other targets. With d = -cosine, negatives are
    ranked by distance, most similar first; the deputy distance is the rank-k one (rule "rank"), the
    mean of ranks 2..2k+1 ("smoothed"), or rank floor(m / 2) ("median").
    Loss = mean_i max(gamma d(x_i, x_i+) - d(x_i, deputy_i), margin).
    Returns the loss, a B x R tensor of the deputies' target indices (R = 1, or 2k for smoothed), and
    the clamped share as a 0-dim tensor.
    """
    batch = len(query)
    distance = -(query @ targets.T)  # B x B
    positive = distance.diagonal()
    # Row i's negatives are the targets j != i in order: columns 0 .. B - 2, those from i on shifted by one.
    # Gathered, not masked: on a GPU a boolean mask's result size is read back to the host.
    columns = torch.arange(batch - 1, device=query.device).expand(batch, batch - 1)
    target_index = columns + (columns >= torch.arange(batch, device=query.device)[:, None]).long()  # B x (B - 1)
    negatives = distance.gather(1, target_index)
    ranked, order = negatives.sort(dim=1)  # ascending distance: the most similar negative first
    chosen = slice(*deputy_ranks(rule, rank, batch - 1))
    deputy = ranked[:, chosen].mean(dim=1)
    deputies = target_index.gather(1, order[:, chosen])
    unclamped = gamma * positive - deputy
    loss = torch.clamp(unclamped, min=margin).mean()
    return loss, deputies, (unclamped.detach() <= margin).float().mean()


def parse_deputy(text: str) -> tuple[str, int]:
    """"rank-5" -> ("rank", 5); "smoothed-5" -> ("smoothed", 5); "median" -> ("median", 0)."""
    if text == "median":
        return "median", 0
    rule, _, rank = text.partition("-")
    if rule not in ("rank", "smoothed") or not rank.isdigit() or int(rank) < 1:
        raise ConfigError(f"deputy={text!r} is not rank-K, smoothed-K (K >= 1) or median")
    return rule, int(rank)


def deputy_ranks(rule: str, rank: int, negatives: int) -> tuple[int, int]:
    """Zero-based [first, stop) of the ranked negatives a deputy averages: rank k is [k-1, k);
    smoothed-k averages ranks 2..2k+1, [1, 2k+1); the median is rank floor(m / 2) of m negatives."""
    if rule == "smoothed":
        return 1, 2 * rank + 1
    position = rank - 1 if rule == "rank" else negatives // 2 - 1
    return position, position + 1
