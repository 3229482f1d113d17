"""precision=bf16 covers every forward a trial runs: each method's training step and its target or key
network, the offline relabelling pass, batch-norm calibration and the evaluation's extraction. Hooked on
every convolution and linear layer through a whole `fit`, on the CPU (bf16 autocast runs there). The same
hook checks that every convolution computes in channels-last layout, the layout trainers.networks builds
for speed, in every one of those forwards."""

import math

import pytest
import torch
from torch import nn

from test_fit import Quiet
from trainers.config import TrialConfig
from trainers.fit import fit
from trainers.methods.registry import METHODS

SMALL = {"num_negatives": 8, "clusters_per_class": 2, "min_cluster_size": 3, "queue_size": 64}


def layer_output_dtypes(config: TrialConfig) -> list[tuple[str, torch.dtype]]:
    """(layer type, output dtype) of every Conv2d and Linear forward during fit(config); asserts that every
    Conv2d output is in channels-last layout."""
    seen = []

    def record(module, inputs, output):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            seen.append((type(module).__name__, output.dtype))
        if isinstance(module, nn.Conv2d):
            assert output.shape[1] > 1 and output.shape[2] * output.shape[3] > 1  # else both layouts pass
            assert output.is_contiguous(memory_format=torch.channels_last), f"{module} computed in NCHW"

    handle = nn.modules.module.register_module_forward_hook(record)
    try:
        rows = fit(config, Quiet())
    finally:
        handle.remove()
    assert all(math.isfinite(row["loss"]) for row in rows[1:])
    return seen


def small_config(method: str, **keys) -> TrialConfig:
    own = TrialConfig.keys_of(method)
    return TrialConfig.create(method=method, dataset="synthetic", image_size=16, cnn_width=8, head_hidden=32,
                              embedding_dim=16, batch_size=32, epochs=1, knn_k=10, probe_epochs=1,
                              **{k: v for k, v in {**SMALL, **keys}.items() if k in own})


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_layer_of_every_method_computes_in_bf16(method):
    dtypes = layer_output_dtypes(small_config(method, precision="bf16"))
    assert {kind for kind, _ in dtypes} == {"Conv2d", "Linear"}
    float32 = [kind for kind, dtype in dtypes if dtype != torch.bfloat16]
    assert not float32, f"{len(float32)} of {len(dtypes)} layer calls ran outside bf16"


def test_the_offline_relabelling_pass_computes_in_bf16():
    dtypes = layer_output_dtypes(small_config("mocov2-interclr", precision="bf16", label_mode="offline"))
    assert dtypes and all(dtype == torch.bfloat16 for _, dtype in dtypes)
    # The pass ran: it extracts the training set once more than the same trial with online labels does.
    assert len(dtypes) > len(layer_output_dtypes(small_config("mocov2-interclr", precision="bf16")))


def test_fp32_trials_compute_in_float32():
    """The control: the hook sees float32 when nobody asked for bf16."""
    dtypes = layer_output_dtypes(small_config("byol-interclr"))
    assert dtypes and all(dtype == torch.float32 for _, dtype in dtypes)
