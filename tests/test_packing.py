"""Packing trials on a GPU: the share Ray is given, and the check that the trials sharing a GPU fit in
its memory, on given numbers (no GPU needed)."""

from types import SimpleNamespace

import pytest
import torch

from study import packing
from trainers import data as datasets
from trainers.config import ConfigError, TrialConfig
from trainers.networks import Encoder

GIB = 2 ** 30


def test_trials_per_gpu_is_the_whole_number_of_shares():
    assert [packing.trials_per_gpu(g) for g in (0.25, 1 / 3, 0.3, 0.5, 1, 2)] == [4, 3, 3, 2, 1, 1]


def test_four_trials_fit_exactly_and_not_in_less():
    trial = packing.TrialMemory(networks=1 * GIB, activations=2 * GIB, bank=1 * GIB)
    assert trial.total() == 6 * GIB  # 1.25 x 4 GiB + 1 GiB of CUDA context
    packing.check_fits(0.25, trial, 24 * GIB)
    with pytest.raises(ConfigError, match=r"puts 4 trials on a GPU of 23\.9 GiB.*--gpus-per-trial 0\.3333 \(3 per GPU\)"):
        packing.check_fits(0.25, trial, 24 * GIB - GIB // 10)
    with pytest.raises(ConfigError, match="lower batch_size"):
        packing.check_fits(1, trial, 5 * GIB)


def test_shares_ray_cannot_schedule_or_a_trial_cannot_use_are_refused():
    for share in (-0.5, 1.5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="share of one GPU in .* or a whole number of GPUs"):
            packing.check_share(share)
    for share in (0, 0.25, 1, 2, 8):  # a share of one GPU, or whole GPUs for a trial over that many ranks
        packing.check_share(share)
    assert [packing.ranks_per_trial(share) for share in (0, 0.25, 1, 2, 8)] == [1, 1, 1, 2, 8]


def test_a_gpu_trial_without_a_gpu_share_is_refused_where_a_gpu_is_visible(monkeypatch):
    from catalogue import STUDIES
    from study.profiles import PROFILES
    from study.run import RunOptions
    from study.safety import preflight
    from study.trials import expand

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trials = expand(STUDIES["sampling"], PROFILES["tiny"], 1, {"device": "cuda"})
    with pytest.raises(ConfigError, match="the tiny profile's GPU share of 0 with device=cuda"):
        preflight.check_devices(trials, RunOptions(study="sampling"))
    with pytest.raises(ConfigError, match="--gpus-per-trial 0 with device=cuda"):
        preflight.check_devices(trials, RunOptions(study="sampling", gpus_per_trial=0.0))
    preflight.check_devices(trials, RunOptions(study="sampling", gpus_per_trial=0.5))


def test_trials_over_more_gpus_than_a_node_or_a_batch_holds_are_refused_in_one_line(monkeypatch):
    from study.run import RunOptions, plan
    from study.safety import preflight

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    options = RunOptions(study="methods", scale="cifar", gpus_per_trial=4.0)
    trials = plan(options, "methods")
    assert {t.config.data_parallel for t in trials} == {4}  # one rank per GPU
    with pytest.raises(ConfigError, match="runs each trial over 4 GPUs, but this machine has 2; give at most 2"):
        preflight.check_devices(trials, options)
    preflight.check_devices(plan(RunOptions(study="methods", scale="cifar", gpus_per_trial=2.0), "methods"),
                            RunOptions(study="methods", scale="cifar", gpus_per_trial=2.0))
    with pytest.raises(ConfigError, match="disagrees with --gpus-per-trial 2"):
        plan(RunOptions(study="methods", scale="cifar", gpus_per_trial=2.0, settings=("data_parallel=3",)), "methods")
    # MoCo's Shuffle BN groups of 256 / 2 images cannot give 256 ranks an image each
    with pytest.raises(ConfigError, match="Shuffle BN group of 128"):
        plan(RunOptions(study="methods", scale="cifar", gpus_per_trial=256.0), "methods")


class TwoScalesThenRelu(torch.nn.Module):
    """h = x * w1, y = relu(h * w2). Autograd keeps x (for w1's gradient), h and w2 (for each other's
    gradients) and y (for the ReLU's): per image 3 x C x H x W floats, and w2 once per pass."""
    bf16 = False

    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.ones(3, 6, 6))
        self.w2 = torch.nn.Parameter(torch.ones(3, 6, 6))

    def forward(self, x):
        return (x * self.w1 * self.w2).relu()


def test_saved_activations_are_counted_per_image_without_the_weights():
    assert packing.saved_bytes_per_image(TwoScalesThenRelu(), channels=3, image_size=6, bf16=False) == 3 * 3 * 6 * 6 * 4


def test_estimate_counts_the_momentum_target_and_the_queue():
    data = datasets.synthetic(seed=0)
    config = TrialConfig.create(method="mocov2", dataset="synthetic", image_size=16, batch_size=32, queue_size=64,
                                cnn_width=8, head_hidden=32, embedding_dim=16)
    encoder_parameters = sum(p.numel() for p in Encoder("small-cnn", 1, 32, 16, cnn_width=8).parameters())
    memory = packing.estimate(config, data)
    assert memory.networks == (12 + 4) * encoder_parameters  # the query encoder trained, the key encoder not
    assert memory.bank == 4 * 64 * 16  # the queue of 64 keys; MoCo keeps no memory bank
    assert memory.activations > 0 and memory.sampler == memory.gathered == memory.faiss == 0
    # 600 training and 200 test images: features (4 x width 8 = 32) and embeddings (16), and one kNN chunk
    assert memory.evaluation == 4 * (600 + 200) * (32 + 16) + 4 * 2 ** 26
    # A bf16 trial keeps its features in bf16 (2 bytes), its embeddings in float32.
    bf16 = packing.estimate(config.replace(precision="bf16"), data)
    assert bf16.evaluation == (600 + 200) * (2 * 32 + 4 * 16) + (2 + 4) * 2 ** 26


def test_estimate_counts_the_inter_branch_bank_pools_and_faiss():
    data = datasets.synthetic(seed=0)
    config = TrialConfig.create(method="npidv2-interclr", dataset="synthetic", image_size=16, batch_size=32,
                                cnn_width=8, head_hidden=32, embedding_dim=16, num_negatives=8, pool_fraction=0.1,
                                negative_sampling="semi-hard", clusters_per_class=2, min_cluster_size=5)
    memory = packing.estimate(config, data)
    assert memory.bank == 600 * (4 * 16 + 8)
    assert memory.gathered == 2 * 32 * 8 * 16 * 4  # the intra term's and the inter branch's negatives
    assert memory.sampler == 32 * 600 * 5 + 2 * 8 * 32 * 60  # mask and scores, and pools of 60 = 10% of 600
    # random draws from all 600 entries, whatever pool_fraction says
    assert packing.estimate(config.replace(negative_sampling="random"), data).sampler == 32 * 600 * 5 + 2 * 8 * 32 * 600
    assert memory.faiss == packing.FAISS_TEMP_BYTES
    assert packing.estimate(config.replace(kmeans_backend="torch"), data).faiss == 0


def test_decoding_on_the_device_adds_its_batch_of_images():
    data = datasets.synthetic(seed=0)
    config = TrialConfig.create(method="npidv2", dataset="imagefolder", image_size=16, load_size=20, batch_size=32,
                                cnn_width=8, head_hidden=32, embedding_dim=16, num_negatives=8)
    assert packing.estimate(config, data).decoding == 0
    decoding = packing.estimate(config.replace(decode_on_device=True), data)
    # An evaluation batch of 128 (larger than the training batch of 32) images of 500 x 375 x 3 bytes decoded,
    # 128 canvases of 3 x 20 x 20, one image's float32 in and out; a training batch of 256 counts 256.
    assert decoding.decoding == 128 * 562_500 + 128 * 1_200 + 2 * 4 * 562_500
    assert decoding.total() > packing.estimate(config, data).total()
    larger = packing.estimate(config.replace(decode_on_device=True, batch_size=256), data)
    assert larger.decoding == 256 * 562_500 + 256 * 1_200 + 2 * 4 * 562_500


def step_saved_bytes(config: TrialConfig, data) -> int:
    """Bytes autograd keeps for backward during one real training step, the trained weights excluded."""
    from trainers.trial import Trial

    trial = Trial(config, data)
    trial.start()
    weights = {p.untyped_storage().data_ptr() for p in trial.method.parameters()}
    storages = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    images, labels, indices = next(iter(trial.training_batches()))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        trial.step(images, labels, indices, step=0)
    return sum(storages.values())


@pytest.mark.parametrize("method", ["npidv2-interclr", "mocov2", "byol", "truncated-triplet"])
def test_the_estimate_grows_with_the_batch_as_a_real_step_does(method):
    """The per-image terms (activations x views, gathered negatives) against autograd's saved tensors in
    a real step: the growth from batch 16 to 32 agrees within a factor of 1.25 either way (counting two
    views for NPIDv2, as the estimate once did, would be off by 2)."""
    data = datasets.synthetic(seed=0)
    own = TrialConfig.keys_of(method)
    keys = {"num_negatives": 8, "clusters_per_class": 2, "min_cluster_size": 5, "queue_size": 64,
            "kmeans_backend": "torch"}
    config = TrialConfig.create(method=method, dataset="synthetic", image_size=16, cnn_width=8, head_hidden=32,
                                embedding_dim=16, batch_size=16, epochs=1, knn_k=10, probe_epochs=1,
                                **{k: v for k, v in keys.items() if k in own})
    estimated = [packing.estimate(c, data) for c in (config, config.replace(batch_size=32))]
    grown = [m.activations + m.gathered for m in estimated]
    measured = step_saved_bytes(config.replace(batch_size=32), data) - step_saved_bytes(config, data)
    assert measured > 0 and 1 / 1.25 < (grown[1] - grown[0]) / measured < 1.25


def test_bf16_activations_are_estimated_smaller():
    data = datasets.synthetic(seed=0)
    config = TrialConfig.create(method="byol", dataset="synthetic", image_size=16, batch_size=32, cnn_width=8,
                                head_hidden=32, embedding_dim=16)
    fp32, bf16 = (packing.estimate(config.replace(precision=p), data).activations for p in ("fp32", "bf16"))
    assert bf16 < 0.8 * fp32


def test_a_shared_gpu_caps_the_trials_allocator_at_its_share_less_what_lives_outside_it(monkeypatch):
    """A quarter of an 80 GiB GPU is 20 GiB: less the 1 GiB CUDA context, 19 GiB for PyTorch (0.2375); less
    faiss's 1.5 GiB too where k-means may run in faiss, 17.5 GiB (0.21875)."""
    from study.trainable import cap_gpu_memory

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=80 * GIB))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda share: calls.append(share))
    clustering = TrialConfig.create(method="npidv2-interclr")
    for share in (0.25, 1.0, 0.0):
        cap_gpu_memory(share, TrialConfig.create(method="npidv2"))
    cap_gpu_memory(0.25, clustering)
    cap_gpu_memory(0.25, clustering.replace(kmeans_backend="torch"))
    assert calls == [0.2375, 0.21875, 0.2375]  # a whole GPU, or none, is left uncapped
    with pytest.raises(ConfigError, match="leaves nothing beside the 2.5 GiB"):
        packing.allocator_share(0.03, clustering, 80 * GIB)


def test_a_study_whose_trials_do_not_fit_the_visible_gpu_is_refused_before_launch(monkeypatch, capsys, tmp_path):
    import ray

    from study import run

    monkeypatch.setattr(packing, "visible_gpu_bytes", lambda: 4 * GIB)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU the launch checks look for
    cifar_on_synthetic = ["--set", "dataset=synthetic", "--set", "image_size=16", "--set", "batch_size=64",
                          "--set", "num_negatives=16", "--set", "clusters_per_class=2", "--set", "min_cluster_size=5"]
    code = run.main(["sampling", "--scale", "cifar", *cifar_on_synthetic, "--out", str(tmp_path / "out"),
                     "--storage", str(tmp_path / "runs")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: --gpus-per-trial 0.25 puts 4 trials on a GPU of 4.0 GiB") and "per GPU)" in lines[0]
    assert not ray.is_initialized() and not (tmp_path / "out").exists()


def test_the_launch_check_prints_the_largest_setting(capsys, monkeypatch):
    from catalogue import STUDIES
    from study.profiles import PROFILES
    from study.run import RunOptions
    from study.safety import preflight
    from study.trials import expand

    overrides = {"device": "cuda", "dataset": "synthetic", "image_size": 16, "clusters_per_class": 2,
                 "min_cluster_size": 5, "batch_size": 64}
    trials = expand(STUDIES["sampling"], PROFILES["tiny"], 1, overrides)
    gib = {"hard": 1, "semi-hard": 3, "random": 2, "semi-easy": 1}  # the settings' memory, told apart
    monkeypatch.setattr(packing, "estimate", lambda config, data: packing.TrialMemory(
        networks=gib[config.negative_sampling] * packing.GIB, activations=0, bank=0))
    preflight.check_gpu_packing(trials, None, RunOptions(study="sampling", gpus_per_trial=0.25))
    assert "about 4.8 GiB: networks 3.00 GiB" in capsys.readouterr().out  # semi-hard's: 3 x 1.25 slack + 1 context


def test_the_launch_check_prints_each_trials_gpu_memory_even_where_the_driver_sees_no_gpu(capsys):
    from catalogue import STUDIES
    from study.profiles import PROFILES
    from study.run import RunOptions
    from study.safety import preflight
    from study.trials import expand

    overrides = {"device": "cuda", "dataset": "synthetic", "image_size": 16, "clusters_per_class": 2,
                 "min_cluster_size": 5, "batch_size": 64}
    trials = expand(STUDIES["sampling"], PROFILES["tiny"], 1, overrides)
    data = datasets.load(trials[0].config)
    preflight.check_gpu_packing(trials, data, RunOptions(study="sampling", gpus_per_trial=0.25))
    printed = capsys.readouterr().out
    expected = max((packing.estimate(t.config, data) for t in trials), key=packing.TrialMemory.total).describe()
    assert f"GPU memory per trial (the largest setting) {expected}" in printed
    assert "networks" in printed and "faiss 1.50" in printed and "4 trial(s) fit in one GPU" in printed
