"""The GPU profiles' code paths, run on the CPU at toy size: the cifar profile's network (ResNet-18
with the CIFAR stem) under bf16 autocast on a JPEG tree of non-square images read by a loader
worker, resumed in the middle, and the CIFAR-10 python batches end to end."""

import math
import os

import pytest
import torch

from test_data import write_cifar10_batches
from test_fit import Quiet, assert_resumes_exactly
from trainers.config import TrialConfig
from trainers.fit import fit
from trainers.networks import Encoder, GlobalAveragePool
from trainers.trial import use_deterministic_kernels


def jpeg_tree(root, per_class=4, test_per_class=2, size=36):
    """train/ and test/ of 10 classes of JPEGs whose class sets a colour and a stripe period; every
    other image is size wide and 2/3 of that high, the rest the other way round."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for cls in range(10):
            folder = root / split / f"class{cls}"
            folder.mkdir(parents=True)
            for i in range(count):
                height, width = (size * 2 // 3, size) if i % 2 == 0 else (size, size * 2 // 3)
                stripes = (torch.arange(width)[None, :] // (2 + cls % 4) % 2).expand(height, width)
                noise = torch.randint(0, 40, (height, width, 3), generator=generator)
                pixels = (stripes[..., None] * torch.tensor([25 * cls, 255 - 25 * cls, 128]) + noise).clamp(0, 255)
                Image.fromarray(pixels.to(torch.uint8).numpy()).save(folder / f"{i}.jpg", quality=90)


def test_bf16_keeps_the_embedding_float32_and_close_to_fp32():
    torch.manual_seed(0)
    fp32 = Encoder("resnet18-cifar", 3, 64, 16)
    bf16 = Encoder("resnet18-cifar", 3, 64, 16, bf16=True)
    bf16.load_state_dict(fp32.state_dict())
    fp32.eval(), bf16.eval()
    images = torch.rand(4, 3, 32, 32)
    exact, approximate = fp32(images), bf16(images)
    assert approximate.dtype == torch.float32 and torch.allclose(approximate.norm(dim=1), torch.ones(4))
    assert not torch.equal(exact, approximate)  # autocast did run in bf16
    assert (exact * approximate).sum(dim=1).min() > 0.98  # and the embeddings still agree


@pytest.mark.slow
def test_cifar_profile_path_with_bf16_resumes_exactly(tmp_path):
    # bf16 convolutions are slow on a CPU without bf16 units: 16 x 16 crops keep this test short.
    jpeg_tree(tmp_path / "data", per_class=2, test_per_class=2, size=20)
    config = TrialConfig.create(
        method="npidv2-interclr", dataset="imagefolder", data_root=str(tmp_path / "data"), network="resnet18-cifar",
        load_size=18, image_size=16, precision="bf16", epochs=2, batch_size=10, head_hidden=64, embedding_dim=32,
        num_workers=1,
        num_negatives=2, negative_sampling="random", clusters_per_class=1, min_cluster_size=2, kmeans_backend="torch",
        seed=0)
    rows = assert_resumes_exactly(config, tmp_path / "state")
    assert all(math.isfinite(row["loss"]) for row in rows[1:])


def test_cifar10_python_batches_train_end_to_end(tmp_path):
    write_cifar10_batches(tmp_path / "cifar-10-batches-py", per_class_train=6)
    rows = fit(TrialConfig.create(method="mocov2", dataset="cifar10", data_root=str(tmp_path), image_size=32,
                                  epochs=1, batch_size=20, cnn_width=8, queue_size=40, seed=0))
    assert [row["epoch"] for row in rows] == [0, 1] and math.isfinite(rows[1]["loss"])


@pytest.mark.parametrize("method", ["npidv2-interclr", "mocov2-interclr", "byol-interclr", "truncated-triplet"])
def test_deterministic_kernels_run_every_method_and_change_nothing_on_cpu(method):
    """torch raises for an op without a deterministic kernel; on a CPU both modes give the same numbers."""
    own = TrialConfig.keys_of(method)
    extra = {"num_negatives": 16, "clusters_per_class": 2, "min_cluster_size": 5, "queue_size": 64}
    config = TrialConfig.create(method=method, dataset="synthetic", image_size=16, batch_size=64, epochs=1,
                                knn_k=20, **{k: v for k, v in extra.items() if k in own})
    try:
        strict = fit(config.replace(deterministic=True), Quiet())
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    fast = fit(config, Quiet())
    assert not torch.are_deterministic_algorithms_enabled()
    assert [row["knn_top1"] for row in strict] == [row["knn_top1"] for row in fast]
    assert strict[-1]["loss"] == fast[-1]["loss"]


def test_a_fast_trial_leaves_cublas_ready_for_a_deterministic_one(monkeypatch):
    """cuBLAS reads its workspace setting once per process, at its first use, and refuses deterministic mode
    without it; a Ray worker's first trial may be a fast one."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    use_deterministic_kernels(False, torch.device("cpu"))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own valid choice is kept
    use_deterministic_kernels(False, torch.device("cpu"))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_global_average_pool_is_the_spatial_mean():
    x = torch.randn(3, 5, 4, 6, generator=torch.Generator().manual_seed(0))
    pooled = GlobalAveragePool()(x)
    assert pooled.shape == (3, 5)
    assert torch.allclose(pooled, torch.nn.AdaptiveAvgPool2d(1)(x).flatten(1), atol=1e-6)
    assert torch.allclose(pooled[1, 2], x[1, 2].sum() / 24, atol=1e-6)
