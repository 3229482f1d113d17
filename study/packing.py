"""Several trials on one GPU: Ray's fractional GPUs (`gpus_per_trial` 0.25 puts four trials on a GPU),
checked before launch against the GPU's memory, and each trial capped at its share of that memory
(study.trainable.cap_gpu_memory: PyTorch's allocator gets the share less what the process holds outside it).

A trial's GPU memory is estimated from its config, not measured on a GPU, term by term:
  networks     trained parameters x 12 bytes (fp32 weights, gradients, SGD momentum), and 4 bytes for
               each parameter of the networks it does not train (MoCo's key encoder, BYOL's target);
  activations  the bytes of the tensors the encoder saves for backward for one image, counted on the
               CPU with autograd's saved-tensor hooks at the trial's precision (bf16 under autocast),
               x batch_size x the method's views with gradients (1; 2 for BYOL and the triplet);
  bank         N x (D float32 features + an int64 label) for a memory bank, and MoCo's queue;
  gathered     the negatives gathered from the bank per step and kept for backward: B x K x D float32
               for NPIDv2's own term and again for the inter branch;
  sampler      the inter branch's pools: a B x N mask and B x N float32 scores, and two B x pool-width
               int64 index tensors;
  evaluation   the cached training and test features ((N + N_test) x F, bf16 in a bf16 trial, else
               float32) and embeddings ((N + N_test) x D float32), and one kNN chunk of similarities (float32,
               and bf16 before that in a bf16 trial);
  faiss        faiss's temporary GPU memory (its default cap, 1.5 GiB) where k-means may run there;
  decoding     with decode_on_device: a batch of decoded images (the larger of a training and an evaluation
               batch; 3 bytes a pixel, each taken as ImageNet's typical 500 x 375, declared: the files are not
               read), its canvases (3 x load_size^2 uint8 each), and one image's float32 copies in and out of
               the resize;
  allowance    x 1.25 for the allocator's fragmentation, augmentation temporaries and cuDNN workspaces,
               plus 1 GiB for the CUDA context of each trial's process.
Terms that never coexist (a step's buffers and the evaluation's features) are still summed: the
estimate errs towards refusing a packing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainers.config import ConfigError, TrialConfig
from trainers.data import EVALUATION_BATCH
from trainers.evaluate import KNN_SIMILARITIES_PER_CHUNK, feature_dtype
from trainers.trial import Trial

GIB = 2 ** 30
CONTEXT_BYTES = 1 * GIB
FAISS_TEMP_BYTES = 3 * GIB // 2  # faiss's StandardGpuResources default temporary memory cap
SLACK = 1.25
TERMS = ("networks", "activations", "bank", "gathered", "sampler", "evaluation", "faiss", "decoding")
DECODED_PIXELS = 500 * 375  # an image as decoded on the device, before the resize: ImageNet's typical size


@dataclass(frozen=True)
class TrialMemory:
    networks: int
    activations: int
    bank: int
    gathered: int = 0
    sampler: int = 0
    evaluation: int = 0
    faiss: int = 0
    decoding: int = 0

    def terms(self) -> dict[str, int]:
        return {term: getattr(self, term) for term in TERMS}

    def total(self) -> int:
        return math.ceil(SLACK * sum(self.terms().values())) + CONTEXT_BYTES

    def describe(self) -> str:
        parts = ", ".join(f"{term} {size / GIB:.2f}" for term, size in self.terms().items() if size)
        return f"about {self.total() / GIB:.1f} GiB: {parts} GiB, x {SLACK} + {CONTEXT_BYTES / GIB:.0f} GiB CUDA context"


def trials_per_gpu(gpus_per_trial: float) -> int:
    """How many trials Ray places on one GPU at this share (1 for a whole GPU or more)."""
    return max(1, math.floor(1 / gpus_per_trial + 1e-9))


def check_share(gpus_per_trial: float) -> None:
    """A GPU request Ray can schedule and a trial can use: a share of one GPU in (0, 1], or a whole number of
    GPUs for a trial over that many ranks (trainers.distributed); raises ConfigError."""
    whole = math.isfinite(gpus_per_trial) and gpus_per_trial > 1 and gpus_per_trial == int(gpus_per_trial)
    if not (0 <= gpus_per_trial <= 1 or whole):  # also refuses nan and inf
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial}; give a share of one GPU in (0, 1] (0.25: four "
                          f"trials per GPU) or a whole number of GPUs for each trial (2: a trial over 2 GPUs)")


def ranks_per_trial(gpus_per_trial: float) -> int:
    """The data-parallel ranks a GPU request gives each trial: one per whole GPU, one for a share."""
    return int(gpus_per_trial) if gpus_per_trial > 1 else 1


def estimate(config: TrialConfig, data) -> TrialMemory:
    """A trial's GPU memory, from its config and dataset (see the module's notes)."""
    method = Trial(config.replace(device="cpu", deterministic=False), data).method  # the networks fit builds
    trained = {id(p): p.numel() for p in method.parameters()}
    untrained = {id(p): p.numel() for module in vars(method).values() if isinstance(module, torch.nn.Module)
                 for p in module.parameters() if id(p) not in trained}
    networks = 12 * sum(trained.values()) + 4 * sum(untrained.values())
    per_image = saved_bytes_per_image(method.encoder, data.channels, config.image_size, config.precision == "bf16")
    keys = TrialConfig.keys_of(config.method)
    b, n, d = config.batch_size, len(data.train), config.embedding_dim
    has_bank = "bank_momentum" in keys  # NPIDv2's bank, or the inter branch's own
    queue = config.queue_size if "queue_size" in keys else 0
    bank = (n * (4 * d + 8) if has_bank else 0) + 4 * queue * d
    samples_negatives = "negative_sampling" in keys
    gathering = ("intra_margin" in keys) + samples_negatives  # NPIDv2's own term, the inter branch
    gathered = 4 * b * config.num_negatives * d * gathering if gathering else 0
    sampler = 0
    if samples_negatives:
        width = n if config.negative_sampling == "random" else math.ceil(config.pool_fraction * n)
        sampler = b * n * (1 + 4) + 2 * 8 * b * max(width, config.num_negatives)
    feature_bytes = torch.finfo(feature_dtype(config.precision)).bits // 8  # bf16 trials keep bf16 features
    # A kNN chunk's similarities: float32, and for bf16 features first their bf16 product.
    similarity_bytes = 4 + (feature_bytes if feature_bytes != 4 else 0)
    evaluation = (n + len(data.test)) * (feature_bytes * method.encoder.feature_dim + 4 * d) \
        + similarity_bytes * KNN_SIMILARITIES_PER_CHUNK
    decoding = max(b, EVALUATION_BATCH) * 3 * (DECODED_PIXELS + config.load_size ** 2) + 2 * 4 * 3 * DECODED_PIXELS \
        if config.decode_on_device else 0
    return TrialMemory(networks, per_image * b * method.views_with_gradients, bank, gathered, sampler, evaluation,
                       FAISS_TEMP_BYTES if faiss_may_cluster(config) else 0, decoding)


def faiss_may_cluster(config: TrialConfig) -> bool:
    """Whether the trial's k-means may run in faiss, which takes its temporary GPU memory outside PyTorch's."""
    return "clusters_per_class" in TrialConfig.keys_of(config.method) and config.kmeans_backend != "torch"


def allocator_share(gpus_per_trial: float, config: TrialConfig, gpu_bytes: int) -> float:
    """The fraction of the GPU's memory that PyTorch's allocator may take in a trial holding `gpus_per_trial` of
    it: its share less what its process holds outside that allocator (the CUDA context, faiss's temporary
    memory), which the launch check counted inside the share; raises ConfigError if nothing is left."""
    outside = CONTEXT_BYTES + (FAISS_TEMP_BYTES if faiss_may_cluster(config) else 0)
    left = gpus_per_trial * gpu_bytes - outside
    if left <= 0:
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial} of a {gpu_bytes / GIB:.1f} GiB GPU leaves nothing "
                          f"beside the {outside / GIB:.1f} GiB a trial's process holds outside PyTorch (its CUDA "
                          f"context{', faiss' if outside > CONTEXT_BYTES else ''}); give a larger share")
    return left / gpu_bytes


def saved_bytes_per_image(encoder: torch.nn.Module, channels: int, image_size: int, bf16: bool) -> int:
    """Bytes of the tensors a forward pass of the encoder keeps for backward, per image, at the given
    precision: the difference between passes of 4 and 2 images, so the weights that layers save cancel out."""

    def saved(images: int) -> int:
        storages = {}  # a tensor that several layers save (a ReLU's output, a convolution's input) counts once

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            encoder(torch.zeros(images, channels, image_size, image_size))
        return sum(storages.values())

    was_bf16, encoder.bf16 = encoder.bf16, bf16
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
