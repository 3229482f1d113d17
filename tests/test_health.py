"""The health signals recorded beside the metrics, against hand computations on constructed banks:
the true-class shares of the inter branch's positives and negatives, the inter loss's chance level,
BYOL-InterCLR's negative-free branch, and the trained gains over the epoch-0 floor."""

import math

import pytest
import torch
import torch.nn.functional as F

from test_methods import small_config
from trainers.config import TrialConfig
from trainers.fit import ConsoleReporter, fit
from trainers.inter_image import InterImageBranch
from trainers.memory_bank import MemoryBank
from trainers.randomness import RandomStreams

# Six bank entries in pseudo-label pairs (0, 1), (2, 3), (4, 5); their true classes 0, 0, 0, 1, 1, 1.
PSEUDO = torch.tensor([0, 0, 1, 1, 2, 2])
TRUTH = torch.tensor([0, 0, 0, 1, 1, 1])


def branch(method="npidv2-interclr", features=None, **keys):
    config = TrialConfig.create(method=method, **keys)
    bank = MemoryBank(F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
                      if features is None else features, 1.0)
    bank.label(PSEUDO, 3)
    return InterImageBranch(config.settings, bank, 3, seed=0, threads=1, truth=TRUTH)


def test_true_class_shares_of_positives_and_negatives_by_hand():
    # K = 4 random negatives out of the 4 entries outside a query's pair: every eligible entry is drawn.
    inter = branch(negative_sampling="random", num_negatives=4, inter_margin=0.0)
    query = F.normalize(torch.randn(2, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    _, logs = inter.loss(query, torch.tensor([0, 2]), RandomStreams.create(0, torch.device("cpu")))
    # query 0 (class 0): positive 1 is class 0; negatives 2, 3, 4, 5 are classes 0, 1, 1, 1 -> 1/4
    # query 2 (class 0): positive 3 is class 1; negatives 0, 1, 4, 5 are classes 0, 0, 1, 1 -> 2/4
    assert float(logs["inter_positives_same_class"]) == 0.5
    assert float(logs["inter_negatives_same_class"]) == pytest.approx((0.25 + 0.5) / 2)
    health = inter.health({"inter_batches": 2.0, "loss_inter": 2 * 1.5, "inter_positives_same_class": 1.0,
                           "inter_negatives_same_class": 0.75})
    assert health["loss_inter_chance"] == pytest.approx(math.log(5))  # ln(K + 1) at m = 0
    assert health["loss_inter_to_chance"] == pytest.approx(1.5 / math.log(5))
    assert health["inter_positives_same_class"] == 0.5 and health["inter_negatives_same_class"] == 0.375


@pytest.mark.parametrize("margin, temperature", [(0.0, 0.1), (-0.1, 0.1), (0.2, 0.5)])
def test_inter_loss_of_indistinguishable_candidates_is_its_chance_level(margin, temperature):
    # Every bank entry and the query on one direction: all cosines are 1, so no candidate is told apart.
    same = F.normalize(torch.ones(6, 4), dim=1)
    inter = branch(features=same, negative_sampling="random", num_negatives=4, inter_margin=margin,
                   temperature=temperature)
    loss, _ = inter.loss(same[:2], torch.tensor([0, 2]), RandomStreams.create(0, torch.device("cpu")))
    by_hand = math.log(1 + 4 * math.exp(margin / temperature))
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)
    assert inter.loss_at_chance == pytest.approx(by_hand, rel=1e-12)
    health = inter.health({"inter_batches": 1.0, "loss_inter": float(loss), "inter_positives_same_class": 0.0,
                           "inter_negatives_same_class": 0.0})
    assert health["loss_inter_to_chance"] == pytest.approx(1.0, rel=1e-5)


def test_byol_interclr_branch_has_no_negatives_and_regresses_onto_the_positive():
    settings = TrialConfig.create(method="byol-interclr").settings
    for key in ("num_negatives", "negative_sampling", "inter_margin", "pool_fraction", "temperature"):
        assert not hasattr(settings, key), key
    axes = torch.eye(4)[[0, 0, 1, 1, 2, 2]]  # each pair on its own axis
    inter = branch("byol-interclr", features=axes)
    streams = RandomStreams.create(0, torch.device("cpu"))
    on_positive, logs = inter.loss(torch.eye(4)[[0, 1]], torch.tensor([0, 2]), streams)
    assert float(on_positive) == 0.0 and "inter_negatives_same_class" not in logs  # 2 - 2 cos = 0 on the positive
    orthogonal, _ = inter.loss(torch.eye(4)[[3, 3]], torch.tensor([0, 2]), streams)
    assert float(orthogonal) == 2.0 and inter.loss_at_chance == 2.0


def test_rows_carry_health_columns_and_gains_over_the_epoch_zero_floor():
    quiet = ConsoleReporter()
    quiet.report = lambda row, state: None
    rows = fit(small_config("npidv2-interclr", epochs=1, negative_sampling="random", inter_margin=0.0), quiet)
    floor, last = rows
    for metric in ("knn_top1", "svm_map", "linear_top1"):
        assert floor[f"{metric}_gain"] == 0.0
        assert last[f"{metric}_gain"] == pytest.approx(last[metric] - floor[metric])
    assert last["loss_inter_chance"] == pytest.approx(math.log(17))  # K = 16 at margin 0
    assert last["loss_inter_to_chance"] == pytest.approx(last["loss_inter"] / math.log(17))
    for share in ("inter_positives_same_class", "inter_negatives_same_class"):
        assert 0.0 <= last[share] <= 1.0
    byol = fit(small_config("byol-interclr", epochs=1), quiet)[-1]
    assert byol["loss_inter_chance"] == 2.0 and "inter_negatives_same_class" not in byol
