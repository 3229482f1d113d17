import numpy as np
import torch
import torch.nn.functional as F

from trainers.memory_bank import MemoryBank, rows


def random_bank(n=120, dim=6, k=5, seed=0, momentum=0.5):
    generator = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(n, dim, generator=generator), dim=1)
    labels = torch.randint(k, (n,), generator=generator)
    bank = MemoryBank(features, momentum)
    bank.label(labels, k)
    return bank, generator


def brute_force_centroids(features, labels, k):
    return torch.stack([features[labels == c].double().mean(0) if (labels == c).any()
                        else torch.zeros(features.shape[1], dtype=torch.float64) for c in range(k)])


def test_write_is_the_momentum_update():
    bank, generator = random_bank(momentum=0.3)
    before = bank.features.clone()
    indices = torch.tensor([3, 7, 50])
    new = F.normalize(torch.randn(3, 6, generator=generator), dim=1)
    bank.write(indices, new, relabel=False)
    expected = 0.7 * before[indices] + 0.3 * new
    expected = expected / expected.norm(dim=1, keepdim=True)
    assert torch.allclose(bank.features[indices], expected, atol=1e-6)
    untouched = torch.ones(len(before), dtype=torch.bool)
    untouched[indices] = False
    assert torch.equal(bank.features[untouched], before[untouched])


def test_online_relabel_matches_brute_force_kmeans_step():
    bank, generator = random_bank()
    for step in range(25):
        indices = torch.randperm(120, generator=generator)[:16]
        new = F.normalize(torch.randn(16, 6, generator=generator), dim=1)
        centroids = brute_force_centroids(bank.features, bank.labels, 5)
        alive = torch.bincount(bank.labels, minlength=5) > 0
        updated = F.normalize(0.5 * bank.features[indices] + 0.5 * new, dim=1).double()
        distances = torch.cdist(updated, centroids).masked_fill(~alive, float("inf"))
        expected_labels = distances.argmin(dim=1)

        bank.write(indices, new, relabel=True)

        assert torch.equal(bank.labels[indices], expected_labels), f"step {step}"
        assert torch.equal(bank.counts, torch.bincount(bank.labels, minlength=5))
        recomputed = brute_force_centroids(bank.features, bank.labels, 5).float()
        assert torch.allclose(bank.centroids, recomputed, atol=1e-5)


def test_labels_changed_count():
    bank, generator = random_bank()
    indices = torch.arange(30)
    before = bank.labels[indices].clone()
    changed = bank.write(indices, F.normalize(torch.randn(30, 6, generator=generator), dim=1), relabel=True)
    assert changed == int((bank.labels[indices] != before).sum())


def test_rebalance_dissolves_small_clusters_and_splits_the_largest():
    generator = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(100, 4, generator=generator), dim=1)
    labels = torch.zeros(100, dtype=torch.long)
    labels[:60] = 0  # the largest cluster
    labels[60:90] = 1
    labels[90:93] = 2  # too small
    labels[93:100] = 3  # too small; cluster 4 is empty
    bank = MemoryBank(features, 0.5)
    bank.label(labels, 5)
    reseeded = bank.rebalance(min_size=10)
    assert reseeded == 3
    assert bool((bank.counts >= 10).all()), bank.counts.tolist()
    assert torch.equal(bank.counts, torch.bincount(bank.labels, minlength=5))
    assert torch.allclose(bank.centroids, brute_force_centroids(bank.features, bank.labels, 5).float(), atol=1e-5)
    # The sums moved with the members (no recount): still float64 sums of exactly the current members.
    member_sums = torch.stack([bank.features[bank.labels == c].double().sum(0) for c in range(5)])
    assert torch.allclose(bank.sums, member_sums, rtol=0, atol=1e-12)


def test_a_dissolved_clusters_members_join_their_nearest_other_non_empty_cluster():
    # Clusters 0 and 1 (12 members each) sit around the first and second axes; cluster 2 (3 members) is too
    # small and cluster 3 is empty. With min_size 10 no cluster reaches 20 after the dissolve, so nothing
    # is split and the members' new labels show where the dissolve put them.
    generator = torch.Generator().manual_seed(0)
    def around(axis, count):
        return F.normalize(torch.eye(4)[axis] + 0.1 * torch.randn(count, 4, generator=generator), dim=1)

    stray = F.normalize(torch.tensor([[0.9, 0.2, 0.0, 0.0], [0.2, 0.9, 0.0, 0.0], [0.1, 1.0, 0.1, 0.0]]), dim=1)
    bank = MemoryBank(torch.cat([around(0, 12), around(1, 12), stray]), 0.5)
    bank.label(torch.tensor([0] * 12 + [1] * 12 + [2] * 3), 4)
    assert bank.rebalance(min_size=10) == 0
    # By hand: the first stray point lies near the first axis (cluster 0), the other two near the second (1).
    assert bank.labels[24:].tolist() == [0, 1, 1]
    assert bank.counts.tolist() == [13, 14, 0, 0]


def test_rebalance_splits_the_largest_cluster_at_the_median_of_its_principal_direction():
    generator = torch.Generator().manual_seed(1)
    spread = torch.tensor([1.0, 3.0, 0.3, 0.2])  # cluster 0 is stretched along a direction near the second axis
    features = torch.cat([F.normalize(torch.randn(60, 4, generator=generator) * spread + torch.tensor([4.0, 0, 0, 0]),
                                      dim=1),
                          F.normalize(torch.randn(30, 4, generator=generator) - torch.tensor([4.0, 0, 0, 0]), dim=1)])
    labels = torch.cat([torch.zeros(60, dtype=torch.long), torch.ones(30, dtype=torch.long)])  # cluster 2 is empty
    bank = MemoryBank(features, 0.5)
    bank.label(labels, 3)
    assert bank.rebalance(min_size=10) == 1
    # The expected halves from numpy's SVD of the centred members (the principal direction's sign is arbitrary).
    members = features[:60].double().numpy()
    centred = members - members.mean(axis=0)
    projection = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
    upper = set(np.flatnonzero(projection > np.median(projection)).tolist())
    lower = set(range(60)) - upper
    assert set(torch.nonzero(bank.labels == 2).flatten().tolist()) in (upper, lower)
    assert len(upper) == 30


def test_state_round_trip_is_exact():
    bank, generator = random_bank(momentum=0.3)  # not the default 0.5, so a dropped momentum would show
    bank.write(torch.arange(10), F.normalize(torch.randn(10, 6, generator=generator), dim=1), relabel=True)
    copy = MemoryBank.from_state_dict(bank.state_dict(), torch.device("cpu"))
    assert torch.equal(copy.sums, bank.sums) and torch.equal(copy.labels, bank.labels)
    assert torch.equal(copy.features, bank.features) and torch.equal(copy.counts, bank.counts)
    assert copy.momentum == 0.3 and copy.num_clusters == bank.num_clusters == 5


def test_rows_takes_the_table_rows_at_indices_of_any_shape():
    table = torch.arange(12).reshape(6, 2)  # row j is [2j, 2j + 1]
    indices = torch.tensor([[5, 0, 5], [2, 2, 1]])
    assert rows(table, indices).tolist() == [[[10, 11], [0, 1], [10, 11]], [[4, 5], [4, 5], [2, 3]]]
    assert rows(torch.tensor([7, 8, 9]), torch.tensor([[2], [0]])).tolist() == [[9], [7]]
