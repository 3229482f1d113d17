"""Which bank entries a query contrasts with: the inter-image positive and the four negative samplers.

All functions work on a whole batch (or one rank's share of it) at once. A query's own cluster (the
pseudo-label of its bank entry) holds its candidate positives; every other entry is eligible as a negative.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.profiler import record_function

NEGATIVE_SAMPLING = ("hard", "semi-hard", "random", "semi-easy")
# Where the pools' B x N work (own-cluster ranks, the pool's selection) runs in numpy, whose kernels beat
# torch's on a CPU at the one thread a tiny-profile trial uses (see overwrite_own_clusters and top_width).
NUMPY_DEVICES = ("cpu",)


class Clusters:
    """The bank's entries grouped by pseudo-label; built once per step and shared by both samplers."""

    def __init__(self, labels: torch.Tensor, num_clusters: int):
        self.labels = labels  # N pseudo-labels
        if labels.device.type in NUMPY_DEVICES:
            self.sizes, self.order, self.starts, self.rank = (
                torch.from_numpy(part) for part in _grouping_in_numpy(labels.numpy(), num_clusters))
        else:
            # Counted by index_add: on a GPU, bincount reads the labels' range back to the host.
            self.sizes = torch.zeros(num_clusters, dtype=torch.long, device=labels.device).index_add_(
                0, labels, torch.ones_like(labels))
            self.order = torch.argsort(labels, stable=True)  # bank indices grouped by cluster
            self.starts = torch.cumsum(self.sizes, 0) - self.sizes  # where each cluster begins in `order`
            position = torch.empty_like(self.order)
            position[self.order] = torch.arange(len(labels), device=labels.device)
            self.rank = position - self.starts[labels]  # each entry's place within its cluster, 0 .. size - 1


def _grouping_in_numpy(labels: np.ndarray, num_clusters: int) -> tuple[np.ndarray, ...]:
    """Clusters' sizes, order, starts and rank on a CPU, for 5,000 labels in 0.17 ms against torch's 0.32 within a
    tiny-profile step (0.02 against 0.09 in a loop; one thread, AMD EPYC). A stable sort has one answer, so
    `order` is torch's; of labels that fit 16 bits numpy's is a radix sort."""
    sizes = np.bincount(labels, minlength=num_clusters)
    if len(sizes) != num_clusters:  # as the device path's index_add refuses them (and the cast below would wrap them)
        raise IndexError(f"pseudo-labels up to {len(sizes) - 1} for {num_clusters} clusters")
    order = np.argsort(labels.astype(np.min_scalar_type(num_clusters - 1)), kind="stable")
    starts = np.cumsum(sizes) - sizes
    rank = np.empty_like(order)
    rank[order] = np.arange(len(labels)) - np.repeat(starts, sizes)
    return sizes, order, starts, rank


def pool_size(eligible_counts: torch.Tensor, strategy: str, num_negatives: int,
              pool_fraction: float) -> torch.Tensor:
    """How many of each query's eligible entries its strategy draws from (the pool rule)."""
    if strategy == "hard":
        return torch.full_like(eligible_counts, num_negatives)
    if strategy == "random":
        return eligible_counts
    return torch.ceil(pool_fraction * eligible_counts.double()).long()


def assert_pools_hold(clusters: Clusters, query_clusters: torch.Tensor, num_negatives: int, strategy: str,
                      pool_fraction: float) -> torch.Tensor:
    """Each cluster's pool size (the pool rule, for a query of that cluster), after an asynchronous assert that
    every given query's pool holds K entries: nothing waits for the device, and on a CPU it fails at once."""
    eligible_of_cluster = len(clusters.labels) - clusters.sizes  # a query's eligible entries: all but its cluster's
    pool_of_cluster = pool_size(eligible_of_cluster, strategy, num_negatives, pool_fraction)
    sizes, eligible_counts = pool_of_cluster[query_clusters], eligible_of_cluster[query_clusters]
    torch._assert_async(((sizes >= num_negatives) & (eligible_counts >= sizes)).all(),
                        f"a query's {strategy} pool holds fewer than num_negatives={num_negatives} entries; lower "
                        f"num_negatives, raise pool_fraction, or use fewer clusters")
    return pool_of_cluster


def sample_negatives(query: torch.Tensor, bank_features: torch.Tensor, clusters: Clusters,
                     query_clusters: torch.Tensor, num_negatives: int, strategy: str, pool_fraction: float,
                     generator: torch.Generator, rows: tuple[slice, int] | None = None) -> torch.Tensor:
    """K distinct negatives per query from the other clusters, drawn uniformly from the strategy's pool.

    query: B x D, bank_features: N x D (cosine similarity ranks the bank), query_clusters: B labels.
    Pools, per query, among its eligible entries:
      hard      the K most similar (no randomness beyond ties);
      semi-hard the ceil(pool_fraction * eligible) most similar;
      random    all of them;
      semi-easy the ceil(pool_fraction * eligible) least similar.
    Returns B x K bank indices in no particular order. Nothing here waits for the device: a pool
    smaller than K fails by an asynchronous assert (at once on a CPU).
    rows: (where, size) when the B queries are rows `where` of a batch of `size` (one rank's share): the random
    keys are drawn for the whole batch and these rows' kept, so each query's draw, and the generator's state
    after it, are what sampling the whole batch at once gives (every step of the draw is row by row), given
    the same similarities (on a GPU a share's product may round differently in its last bits).
    """
    if strategy not in NEGATIVE_SAMPLING:
        raise ValueError(f"unknown negative sampling {strategy!r}; one of {NEGATIVE_SAMPLING}")
    bank_size = len(clusters.labels)
    pool_of_cluster = assert_pools_hold(clusters, query_clusters, num_negatives, strategy, pool_fraction)
    rows = rows or (slice(None), len(query))
    if strategy == "random":
        keys = uniform_keys(bank_size, generator, query.device, rows)
        overwrite_own_clusters(keys, clusters.labels, query_clusters, torch.full_like(keys[0], -1.0))
        # The K largest of uniform keys over the eligible entries: a uniform K-subset without replacement.
        return largest_keys(keys, num_negatives)
    # One top-k of a width known on the host serves every query, whatever its pool's size: the
    # `width - size` places a query's pool lacks are taken by stand-ins from its own cluster, ranked
    # ahead of every eligible entry and never drawn; its other members rank behind them all. That
    # surplus depends on the query's cluster only, so which members stand in is a per-entry fact
    # (rank within the cluster below its cluster's surplus). A cluster always has enough members:
    # width - ceil(f (N - c)) <= ceil(f c) <= c. Cosines lie in [-1, 1], so +-4 rank outside them.
    most_similar_first = strategy in ("hard", "semi-hard")
    width = num_negatives if strategy == "hard" else math.ceil(pool_fraction * bank_size)
    width = min(bank_size, max(width, num_negatives))
    stands_in = clusters.rank < (width - pool_of_cluster).index_select(0, clusters.labels)
    ahead, behind = (4.0, -4.0) if most_similar_first else (-4.0, 4.0)
    own_value = torch.where(stands_in, ahead, behind)
    # Labelled for study.measure.benchmark: the one part of the samplers whose work no implementation avoids.
    with record_function("similarity product"):
        similarity = torch.mm(query, bank_features.t())
    # In place: one B x N float buffer fewer at the step's peak (1.3 GB at the imagenet profile's B and N).
    ranked = overwrite_own_clusters(similarity, clusters.labels, query_clusters, own_value)
    pool = top_width(ranked, width, largest=most_similar_first)  # B x width bank indices, in no particular order
    if strategy == "hard":
        return pool  # width = size = K, no stand-ins: the pool is the draw
    stand_ins = ranked.gather(1, pool).abs() > 2.0  # only the stand-ins lie outside the cosines' [-1, 1]
    keys = uniform_keys(width, generator, pool.device, rows).masked_fill_(stand_ins, -1.0)
    # The K largest of uniform keys over the pool (stand-ins excluded): a uniform K-subset without replacement.
    return pool.gather(1, largest_keys(keys, num_negatives))


def uniform_keys(columns: int, generator: torch.Generator, device: torch.device,
                 rows: tuple[slice, int]) -> torch.Tensor:
    """Uniform keys of rows (where, size) of a batch: the batch's size x columns keys at `where`."""
    where, size = rows
    return torch.rand((size, columns), generator=generator, device=device)[where]


def overwrite_own_clusters(scores: torch.Tensor, labels: torch.Tensor, query_clusters: torch.Tensor,
                           values: torch.Tensor) -> torch.Tensor:
    """scores[b, j] = values[j] wherever bank entry j has query b's cluster, in place; returns scores.

    scores: B x N, labels: N pseudo-labels of the bank, query_clusters: B labels, values: N.
    On a CPU in numpy: 0.14 ms against torch's 0.50 ms (the tiny profile's 128 x 5,000, one thread, AMD EPYC).
    """
    if scores.device.type in NUMPY_DEVICES:
        own = labels.numpy()[None, :] == query_clusters.numpy()[:, None]
        np.copyto(scores.numpy(), values.numpy()[None, :], where=own)
        return scores
    own = labels[None, :] == query_clusters[:, None]
    return torch.where(own, values[None, :], scores, out=scores)


def top_width(scores: torch.Tensor, width: int, largest: bool) -> torch.Tensor:
    """Column indices of each row's `width` largest (or smallest) scores, in no particular order.

    On a CPU this is numpy's introselect: torch.topk there took 9.3 ms against 3.2 ms for the pool of
    the tiny profile (128 x 5,000 scores, width 500, one thread). Either selects the same set up to ties.
    """
    if scores.device.type not in NUMPY_DEVICES:
        return scores.topk(width, dim=1, largest=largest, sorted=False).indices
    columns = scores.shape[1]
    kth = columns - width if largest else width - 1
    picked = np.argpartition(scores.numpy(), kth, axis=1)
    return torch.from_numpy(picked[:, kth:] if largest else picked[:, :width])


def largest_keys(keys: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of each row's k largest keys, largest first: `keys.topk(k, dim=1).indices` (finite keys).

    On a CPU in numpy: 0.19 ms against topk's 0.39 for 128 x 500 keys and k = 16 (one thread, AMD EPYC).
    Distinct keys have one such order; where any row's k + 1 largest hold a tie, the order (and, at the k-th,
    the set) is the sort's own choice, so the whole batch goes to topk: the same draws either way.
    """
    if keys.device.type not in NUMPY_DEVICES or k > keys.shape[1]:  # topk also refuses k > width
        return keys.topk(k, dim=1).indices
    values = keys.numpy()
    width = values.shape[1]
    considered = min(k + 1, width)
    candidates = np.argpartition(values, width - considered, axis=1)[:, width - considered:]
    candidate_values = np.take_along_axis(values, candidates, axis=1)
    descending = np.argsort(-candidate_values, axis=1)
    ranked_values = np.take_along_axis(candidate_values, descending, axis=1)
    if (ranked_values[:, 1:] == ranked_values[:, :-1]).any():
        return keys.topk(k, dim=1).indices
    return torch.from_numpy(np.take_along_axis(candidates, descending[:, :k], axis=1))


def same_cluster_positives(clusters: Clusters, query_indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One uniformly drawn bank entry per query with the query's pseudo-label, never the query itself.

    Falls back to the query's own entry when it is alone in its cluster. (The reference code does
    not exclude the query; excluding it keeps the inter positive from duplicating the intra one.)
    """
    cluster = clusters.labels[query_indices]
    size = clusters.sizes[cluster]
    own_offset = clusters.rank[query_indices]
    uniform = torch.rand(len(query_indices), generator=generator, device=query_indices.device)
    offset = (uniform * (size - 1).clamp(min=1)).long().clamp(max=(size - 2).clamp(min=0))
    offset = offset + (offset >= own_offset).long()  # skip over the query's own slot
    drawn = clusters.order[(clusters.starts[cluster] + offset).clamp(max=len(clusters.order) - 1)]
    return torch.where(size > 1, drawn, query_indices)
