import math

import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from trainers import data as datasets
from trainers.config import TrialConfig
from trainers.evaluate import linear_probe_top1
from trainers.inter_image import InterImageBranch
from trainers.memory_bank import MemoryBank

CONFIG = TrialConfig.create(dataset="synthetic", image_size=16, clusters_per_class=0.4, min_cluster_size=5,
                            num_negatives=16, kmeans_backend="torch", label_mode="offline")


def blob_embeddings(n=600, k=4, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, dim, generator=generator), dim=1) * 3
    truth = torch.arange(n) % k
    return F.normalize(centres[truth] + 0.05 * torch.randn(n, dim, generator=generator), dim=1), truth


def method_with_bank(embeddings):
    """The inter branch over a bank of `embeddings`, labelled by its initial global k-means."""
    clusters = CONFIG.settings.num_clusters(10)  # 10 classes x 0.4 = 4 clusters
    branch = InterImageBranch(CONFIG.settings, MemoryBank(embeddings, 0.5), clusters, seed=0, threads=1,
                              truth=torch.arange(len(embeddings)) % 10)
    branch.start()
    return branch


def test_offline_relabel_matches_brute_force_assignment():
    embeddings, truth = blob_embeddings()
    method = method_with_bank(F.normalize(torch.randn(600, 8, generator=torch.Generator().manual_seed(1)), dim=1))
    method.relabel_offline(embeddings, epoch=3)
    labels = method.bank.labels
    assert adjusted_rand_score(truth.numpy(), labels.numpy()) == 1.0
    # A converged k-means: every embedding is nearest to the mean of its own cluster's embeddings.
    means = torch.stack([embeddings[labels == c].mean(dim=0) for c in range(4)])
    assert torch.equal(labels, torch.cdist(embeddings, means).argmin(dim=1))


def test_labels_changed_ignores_a_renaming_of_clusters():
    embeddings, _ = blob_embeddings()
    method = method_with_bank(embeddings)
    assert method.relabel_offline(embeddings, epoch=1) == 0.0  # same partition, whatever its ids
    moved, _ = blob_embeddings(seed=0)
    moved[:30] = moved[301:331]  # 30 samples (5%) now sit in the next blob
    assert abs(method.relabel_offline(moved, epoch=2) - 30 / 600) < 1e-9


def test_pseudo_label_quality_by_hand():
    method = method_with_bank(blob_embeddings()[0])  # synthetic data: 600 images, 60 per class, in class order
    method.bank.labels = torch.arange(600) // 150  # cluster c holds classes 2.5c .. 2.5c + 2.5
    quality = method.label_quality(datasets.synthetic(seed=0).train.labels)
    # Each cluster of 150 holds 60 of its majority class: purity = 4 * 60 / 600 = 0.4; equal sizes.
    assert abs(quality["label_purity"] - 0.4) < 1e-9 and quality["cluster_size_cv"] == 0.0
    # Every cluster holds classes in shares 0.4, 0.4, 0.2: I = ln 10 - H(0.4, 0.4, 0.2); NMI = I / mean(ln 10, ln 4).
    within = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2))
    assert abs(quality["label_nmi"] - 2 * (math.log(10) - within) / (math.log(10) + math.log(4))) < 1e-9
    method.bank.labels = torch.cat([torch.full((size,), c) for c, size in enumerate((100, 200, 300))])
    unequal = method.label_quality(datasets.synthetic(seed=0).train.labels)
    assert abs(unequal["cluster_size_cv"] - 0.5) < 1e-12  # sizes 100, 200, 300: SD 100 (n - 1), mean 200


def test_linear_probe_separable_and_chance():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(100)
    features = F.one_hot(labels, 4).float() + 0.1 * torch.randn(400, 4, generator=generator)
    assert linear_probe_top1(features, labels, features, labels, epochs=20) == 100.0
    noise = torch.randn(400, 4, generator=generator)
    assert linear_probe_top1(noise[:200], labels[:200], noise[200:], labels[200:], epochs=20) < 45  # chance is 25


def branch_with_labels(labels, **keys):
    config = TrialConfig.create(**keys)
    bank = MemoryBank(F.normalize(torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(0)), dim=1), 0.5)
    bank.label(torch.tensor(labels), int(max(labels)) + 1)
    return InterImageBranch(config.settings, bank, bank.num_clusters, seed=0, threads=1,
                            truth=torch.zeros(len(labels), dtype=torch.long))


def test_negatives_are_checked_against_the_largest_cluster_k_means_made():
    import pytest

    from trainers.config import ConfigError

    labels = [0] * 90 + [1] * 5 + [2] * 5  # 100 samples; a query of cluster 0 has only 10 others to draw from
    branch_with_labels(labels, negative_sampling="random", num_negatives=10).check_pools()
    with pytest.raises(ConfigError, match=r"num_negatives=11 exceeds the 10 bank entries .* largest initial "
                                          r"cluster \(90 of 100"):
        branch_with_labels(labels, negative_sampling="random", num_negatives=11).check_pools()
    # semi-hard: the pool is ceil(0.1 x 10) = 1 entry, so K = 2 cannot be drawn without repeats
    branch_with_labels(labels, negative_sampling="semi-hard", num_negatives=1).check_pools()
    with pytest.raises(ConfigError, match="exceeds the 1 bank entries"):
        branch_with_labels(labels, negative_sampling="semi-hard", num_negatives=2).check_pools()
    # balanced clusters of the same data would allow 66 (= 100 - 34) random negatives
    branch_with_labels([i % 3 for i in range(100)], negative_sampling="random", num_negatives=66).check_pools()


def test_online_labels_that_gather_the_bank_in_one_cluster_are_refused_at_the_next_rebalance():
    import pytest

    from trainers.config import ConfigError

    config = TrialConfig.create(negative_sampling="random", num_negatives=40, rebalance_every=5, min_cluster_size=2)
    features = F.normalize(torch.randn(100, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    bank = MemoryBank(features, momentum=1.0)  # a write replaces the feature: it lands exactly where written
    bank.label(torch.tensor([0] * 50 + [1] * 50), 2)
    branch = InterImageBranch(config.settings, bank, 2, seed=0, threads=1, truth=torch.zeros(100, dtype=torch.long))
    branch.check_pools()  # 50 others to draw 40 from
    centre = F.normalize(bank.centroids[0], dim=0)
    for step in range(4):  # steps 0-3: 5 members of cluster 1 each, written onto cluster 0's centroid
        branch.write(torch.arange(50 + 5 * step, 55 + 5 * step), centre.expand(5, 8), step)
    assert bank.counts.tolist() == [70, 30]  # a query of cluster 0 now has 30 others; no rebalance yet
    with pytest.raises(ConfigError, match=r"num_negatives=40 exceeds the 25 bank entries .* largest cluster \(75 of "
                                          r"100 samples\) .* after step 4"):
        branch.write(torch.arange(70, 75), centre.expand(5, 8), 4)  # step 4 ends with a rebalance


def test_offline_labels_that_gather_the_bank_in_one_cluster_are_refused_at_once():
    import pytest

    from trainers.config import ConfigError

    branch = branch_with_labels([0] * 50 + [1] * 50, label_mode="offline", negative_sampling="random",
                                num_negatives=40, min_cluster_size=2)
    branch.check_pools()  # 50 others to draw 40 from
    # 97 embeddings at one point and 3 away from it: whichever 2 clusters k-means makes, one holds the 97,
    # so a query there has at most 3 others to draw from
    embeddings = F.normalize(torch.cat([torch.ones(97, 8), torch.eye(8)[:3] - 2.0]), dim=1)
    with pytest.raises(ConfigError, match=r"num_negatives=40 exceeds the [0-3] bank entries .* largest cluster "
                                          r"\(9[7-9] of 100 samples\) .* after the offline labels of epoch 3"):
        branch.relabel_offline(embeddings, epoch=3)


def test_offline_labels_are_remade_every_offline_every_th_epoch_and_online_labels_never():
    labels = [0] * 50 + [1] * 50
    offline = branch_with_labels(labels, label_mode="offline", offline_every=3)
    assert [epoch for epoch in range(1, 10) if offline.wants_offline_labels(epoch)] == [3, 6, 9]
    online = branch_with_labels(labels, label_mode="online", offline_every=3)
    assert not any(online.wants_offline_labels(epoch) for epoch in range(1, 10))


def offline_partition(seed, epoch, embeddings):
    branch = InterImageBranch(CONFIG.settings, MemoryBank(embeddings, 0.5), 4, seed=seed, threads=1,
                              truth=torch.zeros(len(embeddings), dtype=torch.long))
    branch.start()
    branch.relabel_offline(embeddings, epoch)
    return branch.bank.labels.clone()


def test_each_offline_k_means_starts_afresh_yet_reproducibly_from_the_trials_seed():
    # Points without clusters: where k-means ends depends on where it starts.
    embeddings = F.normalize(torch.randn(600, 8, generator=torch.Generator().manual_seed(2)), dim=1)
    epoch_3 = offline_partition(0, 3, embeddings)
    assert torch.equal(epoch_3, offline_partition(0, 3, embeddings))
    assert adjusted_rand_score(epoch_3.numpy(), offline_partition(0, 4, embeddings).numpy()) < 0.9
    assert adjusted_rand_score(epoch_3.numpy(), offline_partition(1, 3, embeddings).numpy()) < 0.9


def test_offline_labels_dissolve_clusters_below_the_minimum_size():
    # Three blobs and 3 far-off points: from most starts, k-means gives the 3 their own cluster, below
    # min_cluster_size=5 (from the others it splits a blob).
    embeddings, _ = blob_embeddings(n=597, k=3)
    embeddings = torch.cat([embeddings, F.normalize(-embeddings[:3].mean(dim=0), dim=0).expand(3, 8)])
    branch = method_with_bank(embeddings)
    for epoch in range(1, 7):
        branch.relabel_offline(embeddings, epoch)
        assert len(branch.bank.labels.unique()) == 4 and int(branch.bank.counts.min()) >= CONFIG.min_cluster_size


def test_writes_move_online_labels_only():
    for mode, moved in (("online", 1), ("offline", 0)):
        config = TrialConfig.create(label_mode=mode, min_cluster_size=2)
        bank = MemoryBank(F.normalize(torch.randn(100, 8, generator=torch.Generator().manual_seed(0)), dim=1), 1.0)
        bank.label(torch.tensor([0] * 50 + [1] * 50), 2)
        branch = InterImageBranch(config.settings, bank, 2, seed=0, threads=1, truth=torch.zeros(100, dtype=torch.long))
        # 5 members of cluster 0 written (momentum 1: replaced) onto cluster 1's centroid
        branch.write(torch.arange(5), F.normalize(bank.centroids[1], dim=0).expand(5, 8), step=0)
        assert bank.labels[:5].tolist() == [moved] * 5, mode
