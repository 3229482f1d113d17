import math

import pytest
import torch
import torch.nn.functional as F

from trainers.config import ConfigError, TrialConfig
from trainers.fit import fit
from trainers.losses import truncated_triplet
from trainers.methods.truncated_triplet import overclustering_events as events_as_tensors


def batch(seed=0, n=9, dim=6):
    generator = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, dim, generator=generator), dim=1),
            F.normalize(torch.randn(n, dim, generator=generator), dim=1))


def brute_force_ranked_negatives(query, targets, i):
    """Query i's negatives as (distance, target index), most similar first, by a plain Python sort."""
    pairs = [(-float(query[i] @ targets[j]), j) for j in range(len(targets)) if j != i]
    return sorted(pairs)


@pytest.mark.parametrize("rule, rank", [("rank", 1), ("rank", 3), ("rank", 8), ("median", 0)])
def test_deputy_is_the_brute_force_rank(rule, rank):
    query, targets = batch()
    gamma = 2.0
    loss, deputies, _ = truncated_triplet(query, targets, rule, rank, gamma, margin=-100.0)
    position = rank - 1 if rule == "rank" else 8 // 2 - 1  # m = 8 negatives: the median is rank 4
    expected_terms = []
    for i in range(len(query)):
        ranked = brute_force_ranked_negatives(query, targets, i)
        assert deputies[i].tolist() == [ranked[position][1]]
        expected_terms.append(gamma * -float(query[i] @ targets[i]) - ranked[position][0])
    # C = -100 never binds: the loss is exactly the mean of gamma d(x, x+) - d(x, deputy).
    assert math.isclose(float(loss), sum(expected_terms) / len(expected_terms), rel_tol=1e-5)


def test_smoothed_rank_by_hand():
    # Query 0 lies along target 0; its negatives (targets 1..5) have cosines 0.9, 0.7, 0.5, 0.1, -0.2.
    angles = torch.tensor([1.0, 0.9, 0.7, 0.5, 0.1, -0.2]).acos()  # cosines to target 0
    targets = torch.stack([angles.cos(), angles.sin()], dim=1)
    query = targets[:1].expand(6, 2).clone()
    loss, deputies, _ = truncated_triplet(query, targets, "smoothed", 2, gamma=2.0, margin=-100.0)
    # Smoothed rank-2 averages ranks 2..5: targets 2, 3, 4, 5.
    assert deputies[0].tolist() == [2, 3, 4, 5]
    # Row 0 by hand: distances -0.7, -0.5, -0.1, 0.2 average -0.275; positive distance -1;
    # term = 2 * (-1) - (-0.275) = -1.725. The other rows by brute force.
    terms = [-1.725]
    for i in range(1, 6):
        ranked = brute_force_ranked_negatives(query, targets, i)
        deputy = sum(d for d, _ in ranked[1:5]) / 4
        terms.append(2.0 * -float(query[i] @ targets[i]) - deputy)
    assert math.isclose(float(loss), sum(terms) / 6, rel_tol=1e-5)


def test_margin_clamps_the_loss_from_below():
    query, targets = batch(seed=3)
    loose, _, _ = truncated_triplet(query, targets, "rank", 1, 2.0, margin=-100.0)
    clamped, _, _ = truncated_triplet(query, targets, "rank", 1, 2.0, margin=10.0)
    assert float(clamped) == 10.0 and float(loose) < 10.0


def test_clamped_share_counts_queries_at_the_bound_by_hand():
    # Three unit vectors in the plane; query i's positive is target i. With rank 1 and gamma 1 each
    # query's unclamped term is d(i, i) - d(i, nearest other) = -cos(i, i) + cos(i, nearest).
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    query = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    # query 0: -1 + max(0, -1) = -1;  query 1: -0.8 + 0.6 = -0.2;  query 2: -0 + 1 = 1
    for margin, expected in ((-1.5, 0.0), (-0.5, 1 / 3), (0.0, 2 / 3), (2.0, 1.0)):
        _, _, share = truncated_triplet(query, targets, "rank", 1, 1.0, margin)
        assert math.isclose(float(share), expected, abs_tol=1e-6), margin


def overclustering_events(labels, deputies):
    return tuple(float(value) for value in events_as_tensors(labels, deputies))


def test_overclustering_events_on_hand_made_batches():
    labels = torch.tensor([0, 1, 2, 0])
    assert overclustering_events(labels, torch.tensor([[1], [2], [1], [0]])) == (1.0, 1.0, 0.25)  # 3 -> 0 only
    assert overclustering_events(labels, torch.tensor([[3], [2], [1], [0]])) == (1.0, 1.0, 0.5)  # 0 -> 3, 3 -> 0
    assert overclustering_events(labels, torch.tensor([[1], [0], [3], [1]])) == (0.0, 1.0, 0.0)
    distinct = torch.tensor([0, 1, 2, 3])
    assert overclustering_events(distinct, torch.tensor([[1], [2], [3], [0]])) == (0.0, 0.0, 0.0)
    # A smoothed deputy counts when any of its averaged negatives shares the class.
    assert overclustering_events(labels, torch.tensor([[1, 3], [0, 2], [0, 1], [1, 2]])) == (1.0, 1.0, 0.25)


def test_deputy_rank_must_fit_the_batch():
    with pytest.raises(ConfigError, match="negatives"):
        TrialConfig.create(method="truncated-triplet", batch_size=8, deputy="rank-8")
    with pytest.raises(ConfigError, match="rank-K"):
        TrialConfig.create(method="truncated-triplet", deputy="top-3")


def test_epoch_metrics_divide_omega_by_the_batches_and_by_event_b():
    from trainers import data as datasets
    from trainers.methods.truncated_triplet import TruncatedTriplet

    config = TrialConfig.create(method="truncated-triplet", dataset="synthetic", image_size=16, batch_size=64)
    method = TruncatedTriplet(config, datasets.load(config), torch.device("cpu"))
    metrics = method.epoch_metrics({"omega": 1.0, "event_b": 2.0, "batches": 4.0, "deputy_same_class": 1.0,
                                    "clamped": 3.0})
    assert metrics["overclustering_given_a"] == 0.25 and metrics["overclustering_given_b"] == 0.5
    assert metrics["deputy_same_class_rate"] == 0.25 and metrics["triplet_clamped_share"] == 0.75
    assert metrics["negatives_per_query"] == 63


def test_triplet_trial_runs_and_records_overclustering():
    config = TrialConfig.create(method="truncated-triplet", dataset="synthetic", image_size=16, epochs=2, batch_size=64,
                         deputy="rank-1", seed=0)
    rows = fit(config)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    for row in rows:
        assert 0.0 <= row["overclustering_given_a"] <= 1.0 and 0.0 <= row["overclustering_given_b"] <= 1.0
        # A batch with a same-class deputy is an Omega batch, so the share never exceeds Pr(Omega|A).
        assert 0.0 <= row["deputy_same_class_rate"] <= row["overclustering_given_a"]
    again = fit(config)
    assert [r["knn_top1"] for r in rows] == [r["knn_top1"] for r in again]
    assert [r["overclustering_given_a"] for r in rows] == [r["overclustering_given_a"] for r in again]
