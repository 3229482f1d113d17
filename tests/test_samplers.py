import math

import pytest
import torch

from trainers.samplers import same_cluster_positives, sample_negatives

N, B = 200, 8


def bank_with_known_order():
    """Query b's similarity to entry j is 1 - j / N: entry 0 is the most similar, N-1 the least.

    Labels cycle over 4 clusters; each query has the label b % 4, so its eligible entries are
    the 150 with another label, and its pools are known exactly.
    """
    similarity = (1 - torch.arange(N).float() / N).repeat(B, 1)
    labels = torch.arange(N) % 4
    query_labels = torch.arange(B) % 4
    eligible = labels[None, :] != query_labels[:, None]
    return similarity, eligible, labels, query_labels


def expected_pool(b, strategy, k, fraction):
    _, eligible, _, _ = bank_with_known_order()
    ordered = torch.nonzero(eligible[b]).flatten().tolist()  # most similar first, by construction
    size = {"hard": k, "random": len(ordered)}.get(strategy, math.ceil(fraction * len(ordered)))
    return set(ordered[-size:] if strategy == "semi-easy" else ordered[:size])


@pytest.mark.parametrize("strategy", ["hard", "semi-hard", "random", "semi-easy"])
def test_draws_only_from_the_pool_never_the_query_label(strategy):
    similarity, eligible, labels, query_labels = bank_with_known_order()
    generator = torch.Generator().manual_seed(1)
    seen = [set() for _ in range(B)]
    for _ in range(30):
        picked = sample_negatives(similarity, eligible, 5, strategy, 0.1, generator)
        assert picked.shape == (B, 5)
        for b in range(B):
            row = picked[b].tolist()
            assert len(set(row)) == 5, "negatives must be distinct"
            assert all(labels[j] != query_labels[b] for j in row)
            assert set(row) <= expected_pool(b, strategy, 5, 0.1)
            seen[b] |= set(row)
    for b in range(B):
        pool = expected_pool(b, strategy, 5, 0.1)
        # Uniform over the pool: 30 draws of 5 cover a 15-entry pool, and reach far into a 150 one.
        assert len(seen[b]) == len(pool) if len(pool) <= 15 else len(seen[b]) > 60


def test_hard_takes_exactly_the_k_most_similar_eligible():
    similarity, eligible, _, _ = bank_with_known_order()
    picked = sample_negatives(similarity, eligible, 7, "hard", 0.1, torch.Generator().manual_seed(0))
    for b in range(B):
        assert set(picked[b].tolist()) == expected_pool(b, "hard", 7, 0.1)


def test_pool_smaller_than_k_is_an_error():
    similarity, eligible, _, _ = bank_with_known_order()
    with pytest.raises(RuntimeError, match="fewer than num_negatives"):
        sample_negatives(similarity, eligible, 16, "semi-hard", 0.1, torch.Generator())  # pool is 15


def test_same_cluster_positive_is_another_member():
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 1])  # cluster 3 holds only sample 6
    queries = torch.arange(8)
    generator = torch.Generator().manual_seed(0)
    drawn = torch.stack([same_cluster_positives(labels, queries, int(labels.max()) + 1, generator) for _ in range(200)])
    for q in range(8):
        members = {j for j in range(8) if labels[j] == labels[q] and j != q}
        got = set(drawn[:, q].tolist())
        assert got == (members or {q})  # every other member appears; a singleton falls back to itself
