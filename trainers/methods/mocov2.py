"""MoCo v2 (Chen et al. 2020) and MoCov2-InterCLR.

Per batch of B images and two MoCo v2 views: queries q = f_q(view 1) from the trained encoder, keys
k = f_k(view 2) from a momentum encoder (f_k <- m f_k + (1 - m) f_q after every step), computed
without gradient. The loss is InfoNCE over [q.k / tau, q.queue_1 / tau, ..., q.queue_K / tau]: the
queue holds the K most recent keys of earlier batches (K = queue_size, several batches), and the
batch's keys join it after the loss.
Shuffle BN: both encoders run on `bn_groups` sub-batches (as on that many GPUs), the keys' on a
shuffled order, so a query and its key never share batch-norm statistics of the same companions.
In MoCov2-InterCLR the inter branch keeps its own bank of keys, written with w = 1 (replaced).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainers.augment import MOCOV2, training_view
from trainers.errors import ConfigError
from trainers.inter_image import InterBranchSettings
from trainers.losses import cosine, margin_nce
from trainers.methods.interclr import InterCLR, IntraImageMethod, IntraStep
from trainers.momentum import ema_update
from trainers.networks import Encoder, build_encoder
from trainers.settings import MethodSettings, check_temperature


@dataclass(frozen=True)
class MoCov2Settings(MethodSettings):
    temperature: float = 0.2
    queue_size: int = 16384  # K negative keys (the InterCLR paper's MoCov2), at least one batch
    encoder_momentum: float = 0.999  # m
    bn_groups: int = 2  # sub-batches with their own batch-norm statistics (Shuffle BN)

    def check(self, trial) -> None:
        super().check(trial)
        check_temperature("temperature", self.temperature)
        if not 0 <= self.encoder_momentum <= 1:
            raise ConfigError(f"need encoder_momentum in [0, 1] (got {self.encoder_momentum})")
        if self.queue_size < trial.batch_size:
            raise ConfigError(f"queue_size={self.queue_size} is shorter than a batch of {trial.batch_size}, so the "
                              f"queue could not hold earlier batches' keys; raise queue_size to a multiple of "
                              f"batch_size")
        if self.bn_groups < 1 or trial.batch_size % self.bn_groups or trial.batch_size // self.bn_groups < 2:
            raise ConfigError(f"bn_groups={self.bn_groups} must divide batch_size={trial.batch_size} into groups of "
                              f"at least 2 images; use a divisor of batch_size")
        group = trial.batch_size // self.bn_groups
        if trial.data_parallel > group:
            raise ConfigError(f"data_parallel={trial.data_parallel} ranks would leave some without an image of a "
                              f"Shuffle BN group of {group}; use at most {group} ranks or fewer bn_groups")


class KeyQueue:
    """The K most recent keys, K x D; each push overwrites the oldest (a push of more than K keeps its last K)."""

    def __init__(self, size: int, dim: int, device: torch.device):
        # MoCo starts from random unit vectors; the global RNG is seeded with the trial's seed.
        self.keys = F.normalize(torch.randn(size, dim, device=device), dim=1)
        self.position = 0  # where the next key goes

    def push(self, keys: torch.Tensor) -> None:
        size = len(self.keys)
        keys = keys.detach()[-size:]
        slots = (self.position + torch.arange(len(keys), device=self.keys.device)) % size
        self.keys[slots] = keys
        self.position = (self.position + len(keys)) % size

    def state_dict(self) -> dict:
        return {"keys": self.keys, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.keys = state["keys"].to(self.keys.device, copy=True)
        self.position = state["position"]


class MoCov2(IntraImageMethod):
    Settings = MoCov2Settings

    def __init__(self, config, data, device):
        super().__init__(config, data, device)
        self.encoder = build_encoder(config, data.channels, device)
        self.key_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.bank_encoder = self.key_encoder
        self.queue = KeyQueue(self.settings.queue_size, config.embedding_dim, device)

    def parameters(self):
        return list(self.encoder.parameters())

    def network_modules(self):
        return [self.encoder, self.key_encoder]

    def intra_step(self, images, indices, streams, with_loss=True):
        c, s = self.config, self.settings
        views = [training_view(images, c.image_size, self.data.mean, self.data.std, streams.views, MOCOV2)
                 for _ in range(2)]
        query = self.in_groups(self.encoder, views[0])  # B x D, unit norm
        with torch.no_grad():
            shuffle = torch.randperm(len(images), generator=streams.shuffle_bn, device=self.device)
            keys = self.in_groups(self.key_encoder, views[1][shuffle])[torch.argsort(shuffle)]  # B x D
        loss = None
        if with_loss:
            # A copy of the queue: the push below overwrites it in place, and backward still needs it.
            loss = margin_nce(cosine(query, keys), query @ self.queue.keys.clone().t(), 0.0, s.temperature)
        self.queue.push(keys)
        return IntraStep(loss, query, keys)

    def in_groups(self, encoder: Encoder, views: torch.Tensor) -> torch.Tensor:
        return torch.cat([encoder(group) for group in views.chunk(self.settings.bn_groups)])

    def after_step(self, progress):
        ema_update(self.key_encoder, self.encoder, self.settings.encoder_momentum)

    def state_dict(self):
        return {"encoder": self.encoder.state_dict(), "key_encoder": self.key_encoder.state_dict(),
                "queue": self.queue.state_dict()}

    def load_state_dict(self, state):
        self.encoder.load_state_dict(state["encoder"])
        self.key_encoder.load_state_dict(state["key_encoder"])
        self.queue.load_state_dict(state["queue"])


@dataclass(frozen=True)
class MoCov2InterCLRSettings(MoCov2Settings, InterBranchSettings):
    pass


class MoCov2InterCLR(InterCLR, MoCov2):
    Settings = MoCov2InterCLRSettings
