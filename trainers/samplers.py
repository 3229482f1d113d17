"""Which bank entries a query contrasts with: the inter-image positive and the four negative samplers.

All functions work on a whole batch at once; `eligible` marks, per query, the bank entries it may
draw negatives from (for InterCLR's inter branch: entries with a different pseudo-label).
"""

from __future__ import annotations

import math

import torch

NEGATIVE_SAMPLING = ("hard", "semi-hard", "random", "semi-easy")


def pool_size(eligible_counts: torch.Tensor, strategy: str, num_negatives: int,
              pool_fraction: float) -> torch.Tensor:
    """How many of each query's eligible entries its strategy draws from (the pool rule)."""
    if strategy == "hard":
        return torch.full_like(eligible_counts, num_negatives)
    if strategy == "random":
        return eligible_counts
    return torch.ceil(pool_fraction * eligible_counts.double()).long()


def sample_negatives(similarity: torch.Tensor, eligible: torch.Tensor, num_negatives: int, strategy: str,
                     pool_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """K distinct negatives per query, drawn uniformly from the strategy's pool.

    similarity: B x N query-to-bank cosine similarities; eligible: B x N bool. Pools, per query:
      hard      the K most similar eligible entries (no randomness beyond their order);
      semi-hard the ceil(pool_fraction * eligible) most similar;
      random    all eligible entries;
      semi-easy the ceil(pool_fraction * eligible) least similar.
    Returns B x K bank indices. Nothing here waits for the device: a pool smaller than K fails by an
    asynchronous assert (at once on a CPU).
    """
    if strategy not in NEGATIVE_SAMPLING:
        raise ValueError(f"unknown negative sampling {strategy!r}; one of {NEGATIVE_SAMPLING}")
    eligible_counts = eligible.sum(dim=1)
    sizes = pool_size(eligible_counts, strategy, num_negatives, pool_fraction)
    torch._assert_async(((sizes >= num_negatives) & (eligible_counts >= sizes)).all(),
                        f"a query's {strategy} pool holds fewer than num_negatives={num_negatives} entries; lower "
                        f"num_negatives, raise pool_fraction, or use fewer clusters")
    if strategy == "random":
        pool = None
        keys = torch.rand(similarity.shape, generator=generator, device=similarity.device)
        keys = keys.masked_fill(~eligible, -1.0)
    else:
        # Cosine similarities lie in [-1, 1]: -4 / +4 put ineligible entries behind every eligible one.
        most_similar_first = strategy in ("hard", "semi-hard")
        ranked = torch.where(eligible, similarity, -4.0 if most_similar_first else 4.0)
        # The widest pool any query can have, known without reading `sizes` back from the device.
        bank_size = similarity.shape[1]
        width = num_negatives if strategy == "hard" else math.ceil(pool_fraction * bank_size)
        width = min(bank_size, max(width, num_negatives))
        pool = ranked.topk(width, dim=1, largest=most_similar_first).indices  # B x P, pool order
        keys = torch.rand(pool.shape, generator=generator, device=similarity.device)
        in_pool = torch.arange(pool.shape[1], device=pool.device)[None, :] < sizes[:, None]
        keys = keys.masked_fill(~in_pool, -1.0)
    # The K largest of uniform keys over the pool: a uniform K-subset without replacement.
    chosen = keys.topk(num_negatives, dim=1).indices
    return chosen if pool is None else pool.gather(1, chosen)


def same_cluster_positives(bank_labels: torch.Tensor, query_indices: torch.Tensor, num_clusters: int,
                           generator: torch.Generator) -> torch.Tensor:
    """One uniformly drawn bank entry per query with the query's pseudo-label, never the query itself.

    Falls back to the query's own entry when it is alone in its cluster. (The reference code does
    not exclude the query; excluding it keeps the inter positive from duplicating the intra one.)
    """
    order = torch.argsort(bank_labels, stable=True)  # bank indices grouped by cluster
    counts = torch.bincount(bank_labels, minlength=num_clusters)
    starts = torch.cumsum(counts, 0) - counts
    position_in_order = torch.empty_like(order)
    position_in_order[order] = torch.arange(len(order), device=order.device)

    cluster = bank_labels[query_indices]
    size = counts[cluster]
    own_offset = position_in_order[query_indices] - starts[cluster]
    uniform = torch.rand(len(query_indices), generator=generator, device=bank_labels.device)
    offset = (uniform * (size - 1).clamp(min=1)).long().clamp(max=(size - 2).clamp(min=0))
    offset = offset + (offset >= own_offset).long()  # skip over the query's own slot
    drawn = order[(starts[cluster] + offset).clamp(max=len(order) - 1)]
    return torch.where(size > 1, drawn, query_indices)
