"""The method interface's parts: MoCo's key queue, the momentum update, hashes per method, and every
registered method training on small synthetic data."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_fit import assert_resumes_exactly
from trainers import data as datasets
from trainers.config import EXECUTION_KEYS, TrialConfig
from trainers.fit import ConsoleReporter, fit
from trainers.methods import registry
from trainers.methods.mocov2 import KeyQueue, MoCov2
from trainers.momentum import cosine_momentum, ema_update
from trainers.randomness import RandomStreams

SYNTHETIC = dict(dataset="synthetic", image_size=16, batch_size=64, seed=0)
NEW_METHODS = ("npidv2", "mocov2", "mocov2-interclr", "byol", "byol-interclr")


def small_config(method: str, **keys) -> TrialConfig:
    """A synthetic-data trial of `method`; the inter branch with clusters a 600-image bank can hold."""
    own = TrialConfig.keys_of(method)
    extra = {"num_negatives": 16, "clusters_per_class": 2, "min_cluster_size": 5}
    return TrialConfig.create(**{"method": method, **SYNTHETIC, **{k: v for k, v in extra.items() if k in own}, **keys})


def test_queue_keeps_the_most_recent_keys_in_ring_order():
    queue = KeyQueue(size=5, dim=2, device=torch.device("cpu"))
    assert queue.keys.shape == (5, 2)
    assert torch.allclose(queue.keys.norm(dim=1), torch.ones(5))  # starts as random unit vectors
    batch = [torch.full((1, 2), float(i)) for i in range(1, 10)]
    queue.push(torch.cat(batch[0:3]))  # keys 1, 2, 3 into slots 0, 1, 2
    queue.push(torch.cat(batch[3:7]))  # keys 4, 5, 6, 7 into slots 3, 4, 0, 1: 1 and 2 are the oldest
    assert queue.keys[:, 0].tolist() == [6, 7, 3, 4, 5] and queue.position == 2
    queue.push(torch.cat(batch[0:9]))  # more keys than slots: the last five (5..9) stay
    assert sorted(queue.keys[:, 0].tolist()) == [5, 6, 7, 8, 9] and queue.keys.shape == (5, 2)
    # ... written on from slot 2 as five pushed keys would be: 5, 6, 7 into slots 2, 3, 4, then 8, 9 into 0, 1
    assert queue.keys[:, 0].tolist() == [8, 9, 5, 6, 7] and queue.position == 2


def test_moco_keys_carry_no_gradient_and_join_the_queue_after_the_loss():
    config = small_config("mocov2", queue_size=128)
    method = MoCov2(config, datasets.synthetic(seed=0), torch.device("cpu"))
    images, _, indices = next(iter(datasets.batches(method.data.train, 64, shuffle=False)))
    before = method.queue.keys.clone()
    step = method.intra_step(images, indices, RandomStreams.create(0, torch.device("cpu")))
    assert not step.bank_features.requires_grad and step.query.requires_grad
    assert torch.equal(method.queue.keys[:64], step.bank_features) and torch.equal(method.queue.keys[64:], before[64:])
    step.loss.backward()
    assert all(p.grad is None for p in method.key_encoder.parameters())
    assert all(p.grad is not None for p in method.encoder.parameters())
    # The loss contrasted the queue as it was before this batch's keys joined it.
    logits = torch.cat([(step.query * step.bank_features).sum(1, keepdim=True), step.query @ before.t()], 1) / 0.2
    expected = F.cross_entropy(logits, torch.zeros(64, dtype=torch.long))
    assert torch.allclose(step.loss, expected, atol=1e-6)


def test_ema_update_by_hand():
    target, online = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1)), nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        target[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        online[0].weight.copy_(torch.tensor([[3.0, -2.0]]))
        online[1].running_mean.fill_(5.0)
    ema_update(target, online, 0.9)
    assert torch.allclose(target[0].weight, torch.tensor([[0.9 * 1 + 0.1 * 3, 0.9 * 2 - 0.1 * 2]]))
    assert target[1].running_mean.item() == 5.0  # buffers are copied
    assert cosine_momentum(0.99, 0.0) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 0.5) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 1.0) == pytest.approx(1.0)
    # a quarter of the way: 1 - 0.01 (cos(pi / 4) + 1) / 2 = 0.9914645 (a straight line would give 0.9925)
    assert cosine_momentum(0.99, 0.25) == pytest.approx(0.9914645, abs=1e-7)


def test_execution_keys_do_not_change_the_hash():
    config = small_config("mocov2-interclr")
    moved = config.replace(data_root="/elsewhere", device="cpu", threads=3, num_workers=2, deterministic=True,
                           data_parallel=2, dataset="imagefolder", decode_on_device=True)
    assert moved.config_hash() == config.replace(dataset="imagefolder").config_hash()
    assert set(EXECUTION_KEYS) == {"data_root", "device", "threads", "num_workers", "decode_on_device", "deterministic",
                                   "data_parallel"}
    assert config.replace(lr=0.05).config_hash() != config.config_hash()
    assert config.replace(encoder_momentum=0.9).config_hash() != config.config_hash()


def test_a_new_key_of_one_method_leaves_the_other_methods_hashes_unchanged(monkeypatch):
    before = {name: small_config(name).config_hash() for name in registry.METHODS}
    extended = dataclasses.make_dataclass("MoCov2Extended", [("new_key", int, dataclasses.field(default=3))],
                                          bases=(MoCov2.Settings,), frozen=True)
    monkeypatch.setattr(MoCov2, "Settings", extended)
    after = {name: small_config(name).config_hash() for name in registry.METHODS}
    assert after["mocov2"] != before["mocov2"]
    assert {k: v for k, v in after.items() if k != "mocov2"} == {k: v for k, v in before.items() if k != "mocov2"}


def test_each_method_refuses_the_keys_of_another():
    with pytest.raises(ValueError, match="unknown config key 'deputy'"):
        TrialConfig.create(method="mocov2", deputy="median")
    with pytest.raises(ValueError, match="bn_groups"):
        small_config("mocov2", bn_groups=3)
    with pytest.raises(ValueError, match="queue_size"):
        small_config("mocov2", queue_size=32)  # shorter than a batch of 64


@pytest.mark.parametrize("method", NEW_METHODS)
def test_each_method_learns(method):
    rows = fit(small_config(method, epochs=3))
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in rows[1:])
    # Training improves what its first epoch made (by at least 3 of the 200 test images). The epoch-0
    # floor is no yardstick at 3 epochs: a random CNN with calibrated batch norm already reaches 81% kNN
    # on the synthetic stripes, and MoCo and BYOL first lose some of that (they pass it after about 3
    # and 5 epochs).
    assert rows[-1]["knn_top1"] > rows[1]["knn_top1"] + 1.25, [r["knn_top1"] for r in rows]
    if method.endswith("-interclr"):
        assert "loss_inter" in rows[-1] and 0 <= rows[-1]["label_nmi"] <= 1


@pytest.mark.parametrize("method", ["mocov2-interclr", "byol-interclr"])
def test_resume_restores_queue_target_and_inter_bank_exactly(method, tmp_path):
    config = small_config(method, epochs=2)
    assert_resumes_exactly(config, tmp_path)


def test_a_state_saved_on_another_device_is_refused(tmp_path):
    config = small_config("npidv2", epochs=1)
    fit(config, ConsoleReporter(str(tmp_path)))
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    torch.save({**state, "device": "cuda"}, tmp_path / "state.pt")  # as if saved by a GPU trial
    with pytest.raises(ValueError, match="made on cuda"):
        fit(config, ConsoleReporter(str(tmp_path)))


def test_npidv2_interclr_at_lambda_1_is_npidv2_bit_for_bit():
    # lambda = 1 is the paper's intra-only baseline: the inter branch draws from its own random streams and
    # adds nothing to the loss, so the same seed gives NPIDv2's numbers exactly (the positive control's
    # "inter - base" is then also "lambda 0.75 - lambda 1").
    quiet = ConsoleReporter()
    quiet.report = lambda row, state: None
    alone = fit(small_config("npidv2", epochs=1), quiet)
    within = fit(small_config("npidv2-interclr", epochs=1, loss_lambda=1.0), quiet)
    for key in ("knn_top1", "svm_map", "linear_top1", "loss"):
        assert [row.get(key) for row in alone] == [row.get(key) for row in within], key
