"""Several trials on one GPU: Ray's fractional GPUs (`gpus_per_trial` 0.25 puts four trials on a GPU),
checked before launch against the GPU's memory.

A trial's GPU memory is estimated from its config, not measured on a GPU:
  networks     trained parameters x 12 bytes (fp32 weights, gradients, SGD momentum), and 4 bytes for
               each parameter of the networks it does not train (MoCo's and BYOL's momentum targets);
  activations  the memory of the tensors the encoder saves for backward for one image, counted on the
               CPU with autograd's saved-tensor hooks, x batch_size x 2 views (no method back-propagates
               more);
  bank         N x (D float32 features + an int64 label) for the memory bank, and MoCo's queue;
  allowance    x 1.25 for the allocator's fragmentation, augmentation temporaries and cuDNN workspaces,
               plus 1 GiB for the CUDA context of each trial's process.
The activations count fp32 tensors, so a bf16 trial needs less than its estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainers.config import ConfigError, TrialConfig
from trainers.trial import Trial

GIB = 2 ** 30
CONTEXT_BYTES = 1 * GIB
SLACK = 1.25
VIEWS_WITH_GRADIENTS = 2


@dataclass(frozen=True)
class TrialMemory:
    networks: int
    activations: int
    bank: int

    def total(self) -> int:
        return math.ceil(SLACK * (self.networks + self.activations + self.bank)) + CONTEXT_BYTES

    def describe(self) -> str:
        return (f"about {self.total() / GIB:.1f} GiB: networks {self.networks / GIB:.2f}, activations "
                f"{self.activations / GIB:.2f}, bank {self.bank / GIB:.2f} GiB, x {SLACK} + {CONTEXT_BYTES / GIB:.0f} "
                f"GiB CUDA context")


def trials_per_gpu(gpus_per_trial: float) -> int:
    """How many trials Ray places on one GPU at this share (1 for a whole GPU or more)."""
    return max(1, math.floor(1 / gpus_per_trial + 1e-9))


def check_share(gpus_per_trial: float) -> None:
    """A share Ray can schedule and a trial can use; raises ConfigError."""
    if not 0 <= gpus_per_trial <= 1:  # also refuses nan and inf
        more = (f" would reserve {gpus_per_trial:g} GPUs for a trial that runs on one (trials across GPUs are not "
                f"built yet), so all but one would sit idle" if gpus_per_trial > 1 and math.isfinite(gpus_per_trial)
                else "")
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial}{more}; give a share of one GPU in (0, 1] (0.25: four "
                          f"trials per GPU)")


def estimate(config: TrialConfig, data) -> TrialMemory:
    """A trial's GPU memory, from its config and dataset (see the module's notes)."""
    method = Trial(config.replace(device="cpu", deterministic=False), data).method  # the networks fit builds
    trained = {id(p): p.numel() for p in method.parameters()}
    untrained = {id(p): p.numel() for module in vars(method).values() if isinstance(module, torch.nn.Module)
                 for p in module.parameters() if id(p) not in trained}
    networks = 12 * sum(trained.values()) + 4 * sum(untrained.values())
    activations = saved_bytes_per_image(method.encoder, data.channels, config.image_size)
    queue = config.queue_size if "queue_size" in TrialConfig.keys_of(config.method) else 0
    bank = len(data.train) * (4 * config.embedding_dim + 8) + 4 * queue * config.embedding_dim
    return TrialMemory(networks, activations * config.batch_size * VIEWS_WITH_GRADIENTS, bank)


def saved_bytes_per_image(encoder: torch.nn.Module, channels: int, image_size: int) -> int:
    """Bytes of the tensors a forward pass of the encoder keeps for backward, per image, in fp32: the
    difference between passes of 4 and 2 images, so the weights that layers save as well cancel out."""

    def saved(images: int) -> int:
        storages = {}  # a tensor that several layers save (a ReLU's output, a convolution's input) counts once

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            encoder(torch.zeros(images, channels, image_size, image_size))
        return sum(storages.values())

    was_bf16, encoder.bf16 = encoder.bf16, False
    try:
        return (saved(4) - saved(2)) // 2
    finally:
        encoder.bf16 = was_bf16


def check_fits(gpus_per_trial: float, trial: TrialMemory, gpu_bytes: int) -> None:
    """The trials that share one GPU fit in its memory; raises ConfigError naming the fix."""
    count = trials_per_gpu(gpus_per_trial)
    if count * trial.total() > gpu_bytes:
        fits = gpu_bytes // trial.total()
        fix = (f"give --gpus-per-trial {1 / fits:.4g} ({fits} per GPU)" if fits >= 1 else
               "lower batch_size or use a larger GPU")
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial} puts {count} trials on a GPU of "
                          f"{gpu_bytes / GIB:.1f} GiB, but each needs {trial.describe()}; {fix}")


def visible_gpu_bytes() -> int | None:
    """The first visible GPU's memory, or None where the driver sees no GPU (a CPU-only head node)."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory
