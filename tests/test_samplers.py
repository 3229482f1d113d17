import itertools
import math

import pytest
import torch
from scipy.stats import chi2

from trainers import samplers
from trainers.samplers import (Clusters, largest_keys, overwrite_own_clusters, same_cluster_positives, sample_negatives,
                               top_width)

N, B = 200, 8


def bank_on_a_circle(similarity_of_entry: torch.Tensor):
    """Unit bank features whose cosine to the query (1, 0) is exactly `similarity_of_entry`."""
    cosine = similarity_of_entry.float()
    features = torch.stack([cosine, (1 - cosine ** 2).clamp(min=0).sqrt()], dim=1)
    return torch.tensor([1.0, 0.0]), features


def bank_with_known_order():
    """Query b's similarity to entry j is 1 - j / N: entry 0 is the most similar, N-1 the least.

    Labels cycle over 4 clusters; each query has the label b % 4, so its eligible entries are
    the 150 with another label, and its pools are known exactly.
    """
    query, features = bank_on_a_circle(1 - torch.arange(N).float() / N)
    labels = torch.arange(N) % 4
    return query.repeat(B, 1), features, labels, torch.arange(B) % 4


def expected_pool(similarity, labels, query_label, strategy, k, fraction):
    """The pool by brute force: the query's eligible entries in order of similarity, cut by the rule."""
    eligible = [j for j in range(len(labels)) if labels[j] != query_label]
    ordered = sorted(eligible, key=lambda j: -float(similarity[j]))  # most similar first
    size = {"hard": k, "random": len(ordered)}.get(strategy, math.ceil(fraction * len(ordered)))
    return set(ordered[-size:] if strategy == "semi-easy" else ordered[:size])


def take_the_device_path(path: str, monkeypatch) -> None:
    """On the CPU the pools' B x N work runs in numpy; "device" sends it through the torch code a GPU runs."""
    if path == "device":
        monkeypatch.setattr(samplers, "NUMPY_DEVICES", ())


@pytest.mark.parametrize("path", ["numpy", "device"])
@pytest.mark.parametrize("strategy", ["hard", "semi-hard", "random", "semi-easy"])
def test_draws_only_from_the_pool_never_the_query_label(strategy, path, monkeypatch):
    take_the_device_path(path, monkeypatch)
    queries, features, labels, query_labels = bank_with_known_order()
    similarity = 1 - torch.arange(N).float() / N
    clusters = Clusters(labels, 4)
    generator = torch.Generator().manual_seed(1)
    seen = [set() for _ in range(B)]
    for _ in range(30):
        picked = sample_negatives(queries, features, clusters, query_labels, 5, strategy, 0.1, generator)
        assert picked.shape == (B, 5)
        for b in range(B):
            row = picked[b].tolist()
            assert len(set(row)) == 5, "negatives must be distinct"
            assert all(labels[j] != query_labels[b] for j in row)
            assert set(row) <= expected_pool(similarity, labels, int(query_labels[b]), strategy, 5, 0.1)
            seen[b] |= set(row)
    for b in range(B):
        pool = expected_pool(similarity, labels, int(query_labels[b]), strategy, 5, 0.1)
        # Uniform over the pool: 30 draws of 5 cover a 15-entry pool, and reach far into a 150 one.
        assert len(seen[b]) == len(pool) if len(pool) <= 15 else len(seen[b]) > 60


@pytest.mark.parametrize("path", ["numpy", "device"])
@pytest.mark.parametrize("strategy", ["semi-hard", "semi-easy", "random"])
def test_pools_of_unequal_clusters_are_drawn_uniformly(strategy, path, monkeypatch):
    """Clusters of 5, 20, 45 and 130 entries give pools of 20, 18, 16 and 7 (10% of 195, 180, 155 and
    70 eligible): one query per cluster, each replicated 600 times in one batch, so every pool member
    should be drawn K / pool size of the time (random: all 195, 180, 155 and 70 eligible entries). Similarities
    are a shuffled ladder, unrelated to index or label."""
    take_the_device_path(path, monkeypatch)
    sizes, k, replicas = [5, 20, 45, 130], 5, 600
    shuffle = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))[shuffle]
    similarity = 1 - torch.randperm(N, generator=torch.Generator().manual_seed(4)).float() / N
    query, features = bank_on_a_circle(similarity)
    query_labels = torch.arange(4).repeat_interleave(replicas)
    picked = sample_negatives(query.repeat(len(query_labels), 1), features, Clusters(labels, 4), query_labels, k,
                              strategy, 0.1, torch.Generator().manual_seed(5))
    pool_lengths = [195, 180, 155, 70] if strategy == "random" else [20, 18, 16, 7]
    for cluster, pool_length in zip(range(4), pool_lengths):
        pool = expected_pool(similarity, labels, cluster, strategy, k, 0.1)
        assert len(pool) == pool_length
        rows = picked[query_labels == cluster]
        assert all(len(set(row)) == k for row in rows.tolist()), "negatives must be distinct"
        assert set(rows.flatten().tolist()) == pool, "exactly the pool, every member of it"
        counts = torch.bincount(rows.flatten(), minlength=N)[sorted(pool)].double()
        expected = replicas * k / len(pool)
        statistic = float(((counts - expected) ** 2 / expected).sum())
        assert statistic < chi2.ppf(0.999, len(pool) - 1), f"cluster {cluster}: draw counts {counts.tolist()}"


def test_hard_takes_exactly_the_k_most_similar_eligible():
    queries, features, labels, query_labels = bank_with_known_order()
    similarity = 1 - torch.arange(N).float() / N
    picked = sample_negatives(queries, features, Clusters(labels, 4), query_labels, 7, "hard", 0.1,
                              torch.Generator().manual_seed(0))
    for b in range(B):
        assert set(picked[b].tolist()) == expected_pool(similarity, labels, int(query_labels[b]), "hard", 7, 0.1)


def test_pool_smaller_than_k_is_an_error():
    queries, features, labels, query_labels = bank_with_known_order()
    with pytest.raises(RuntimeError, match="fewer than num_negatives"):  # the pool is 15
        sample_negatives(queries, features, Clusters(labels, 4), query_labels, 16, "semi-hard", 0.1, torch.Generator())


@pytest.mark.parametrize("path", ["numpy", "device"])
def test_clusters_group_the_bank_by_label(path, monkeypatch):
    take_the_device_path(path, monkeypatch)
    labels = torch.tensor([2, 0, 2, 1, 0, 2, 4])  # cluster 3 is empty
    clusters = Clusters(labels, 5)
    assert clusters.sizes.tolist() == [2, 1, 3, 0, 1]
    assert clusters.order.tolist() == [1, 4, 3, 0, 2, 5, 6]
    assert clusters.starts.tolist() == [0, 2, 3, 6, 6]
    # The j-th member (in index order) of its cluster has rank j.
    assert clusters.rank.tolist() == [0, 0, 1, 0, 1, 2, 0]


def test_clusters_refuse_a_label_beyond_the_cluster_count():
    with pytest.raises(IndexError):
        Clusters(torch.tensor([0, 300, 1]), 3)  # in 8 bits, 300 would wrap to cluster 44


@pytest.mark.parametrize("num_clusters", [3, 300, 70_000])  # labels of 8, 16 and 32 bits
def test_clusters_of_a_large_bank_match_a_brute_force_grouping(num_clusters):
    labels = torch.randint(num_clusters, (5000,), generator=torch.Generator().manual_seed(num_clusters))
    clusters = Clusters(labels, num_clusters)
    members = [[] for _ in range(num_clusters)]
    for j, label in enumerate(labels.tolist()):  # in index order
        members[label].append(j)
    assert clusters.sizes.tolist() == [len(m) for m in members]
    assert clusters.order.tolist() == [j for m in members for j in m]
    rank = [0] * len(labels)
    for m in members:
        for place, j in enumerate(m):
            rank[j] = place
    assert clusters.rank.tolist() == rank
    assert clusters.starts.tolist() == list(itertools.accumulate([len(m) for m in members[:-1]], initial=0))
    assert all(part.dtype == torch.long for part in (clusters.sizes, clusters.order, clusters.starts, clusters.rank))


@pytest.mark.parametrize("path", ["numpy", "device"])
def test_largest_keys_are_each_rows_k_largest_largest_first(path, monkeypatch):
    take_the_device_path(path, monkeypatch)
    keys = torch.randperm(5 * 40, generator=torch.Generator().manual_seed(0)).float().reshape(5, 40)
    for k in (1, 7, 40):
        picked = largest_keys(keys, k)
        for row, columns in zip(keys, picked):
            assert columns.tolist() == sorted(range(40), key=lambda j: -float(row[j]))[:k]


def test_largest_keys_with_ties_are_topks_indices(monkeypatch):
    """Where keys tie, which of them comes first is the sort's choice: the numpy path must make topk's, or a
    seed would draw other negatives on a CPU than the committed results were made with. Batches with ties
    among their k + 1 largest, at the k-th, and none (the one that numpy must answer alone)."""
    generator = torch.Generator().manual_seed(1)
    levels = (torch.rand(100, 50, generator=generator) * 8).floor()  # 8 levels over 50 keys: ties among the largest
    block = torch.rand(100, 50, generator=generator)
    block[:, :20] = 2.0  # 20 keys tie above the rest
    distinct = torch.randperm(100 * 50, generator=generator).float().reshape(100, 50)
    topk_calls = []
    real_topk = torch.Tensor.topk
    monkeypatch.setattr(torch.Tensor, "topk", lambda self, *a, **kw: topk_calls.append(1) or real_topk(self, *a, **kw))
    for keys, ties in ((levels, True), (block, True), (distinct, False)):
        for k in (5, 16, 20):
            topk_calls.clear()
            picked = largest_keys(keys, k)
            assert len(topk_calls) == ties, "tied batches go to topk, the others not"
            assert torch.equal(picked, real_topk(keys, k, dim=1).indices)


def test_same_cluster_positive_is_another_member():
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 1])  # cluster 3 holds only sample 6
    queries = torch.arange(8)
    clusters = Clusters(labels, int(labels.max()) + 1)
    generator = torch.Generator().manual_seed(0)
    drawn = torch.stack([same_cluster_positives(clusters, queries, generator) for _ in range(200)])
    for q in range(8):
        members = {j for j in range(8) if labels[j] == labels[q] and j != q}
        got = set(drawn[:, q].tolist())
        assert got == (members or {q})  # every other member appears; a singleton falls back to itself


def test_same_cluster_positive_is_uniform_over_the_other_members():
    labels = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1, 0])  # cluster 1: samples 0, 2, 3, 5, 6, 7
    queries = torch.full((6000,), 3)
    drawn = same_cluster_positives(Clusters(labels, 2), queries, torch.Generator().manual_seed(0))
    counts = torch.bincount(drawn, minlength=len(labels))[[0, 2, 5, 6, 7]].double()
    assert int(torch.bincount(drawn, minlength=len(labels)).sum() - counts.sum()) == 0  # nothing else, never 3
    statistic = float(((counts - 1200) ** 2 / 1200).sum())
    assert statistic < chi2.ppf(0.999, 4), counts.tolist()


@pytest.mark.parametrize("path", ["numpy", "device"])
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("width", [1, 37, 500, 999, 1000])
def test_top_width_selects_each_rows_extreme_scores(largest, width, path, monkeypatch):
    take_the_device_path(path, monkeypatch)
    scores = torch.randperm(6 * 1000, generator=torch.Generator().manual_seed(width)).float().reshape(6, 1000)
    picked = top_width(scores, width, largest)
    assert picked.shape == (6, width)
    for row, columns in zip(scores, picked):
        ranked = sorted(range(1000), key=lambda j: -float(row[j]) if largest else float(row[j]))
        assert set(columns.tolist()) == set(ranked[:width])


def test_random_negatives_are_the_same_draws_on_the_numpy_and_the_device_path(monkeypatch):
    """Both paths draw the same keys and take their top K alike: only where the own-cluster mask is written
    differs, so a seed gives the same negatives on a CPU whichever path runs."""
    queries, features, labels, query_labels = bank_with_known_order()

    def draw():
        return sample_negatives(queries, features, Clusters(labels, 4), query_labels, 5, "random", 0.1,
                                torch.Generator().manual_seed(7))

    on_numpy = draw()
    take_the_device_path("device", monkeypatch)
    assert torch.equal(draw(), on_numpy)


@pytest.mark.parametrize("path", ["numpy", "device"])
def test_overwrite_own_clusters_replaces_exactly_the_entries_of_each_querys_cluster(path, monkeypatch):
    take_the_device_path(path, monkeypatch)
    labels = torch.tensor([2, 0, 2, 1, 0, 2, 4])
    query_clusters = torch.tensor([2, 3, 0])  # cluster 3 is empty: its row keeps every score
    scores = torch.arange(21, dtype=torch.float32).reshape(3, 7)
    values = -torch.arange(1, 8, dtype=torch.float32)  # entry j's value is -(j + 1)
    returned = overwrite_own_clusters(scores, labels, query_clusters, values)
    assert returned.data_ptr() == scores.data_ptr(), "in place"
    assert scores.tolist() == [[-1, 1, -3, 3, 4, -6, 6],
                               [7, 8, 9, 10, 11, 12, 13],
                               [14, -2, 16, 17, -5, 19, 20]]
