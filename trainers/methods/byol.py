"""BYOL (Grill et al. 2020) and BYOL-InterCLR.

Per batch and two BYOL views (asymmetric blur and solarisation): the online network (backbone,
projector, predictor) predicts p = normalize(q(g(f(view)))); the target network (an EMA of the
online backbone and projector, momentum rising from 0.99 to 1 on a cosine schedule) gives
t = normalize(g'(f'(view))) without gradient. Loss = (2 - 2 p1.t2) + (2 - 2 p2.t1), averaged over
the batch. In BYOL-InterCLR the inter branch keeps a bank of target projections (view 2's written
each step, w = 1) and clusters it; its loss is BYOL's own, 2 - 2 cos between view 1's prediction and
the bank entry of a random other member of the query's cluster, with no negatives and no margin
(InterCLR section 5.1: "we do not use any negative sampling and cosine margin in this entry").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainers.augment import BYOL_VIEWS, training_view
from trainers.distributed import shard_map
from trainers.errors import ConfigError
from trainers.inter_image import ClusteringSettings
from trainers.losses import cosine
from trainers.methods.interclr import InterCLR, IntraImageMethod, IntraStep
from trainers.momentum import cosine_momentum, ema_update
from trainers.networks import build_encoder, compute_precision, mlp
from trainers.settings import MethodSettings


@dataclass(frozen=True)
class BYOLSettings(MethodSettings):
    target_momentum: float = 0.99  # the EMA's base, rising to 1 on a cosine schedule
    predictor_hidden: int = 512

    def check(self, trial) -> None:
        super().check(trial)
        if not 0 <= self.target_momentum <= 1 or self.predictor_hidden < 1:
            raise ConfigError(f"need target_momentum in [0, 1] (got {self.target_momentum}) and predictor_hidden "
                              f">= 1 (got {self.predictor_hidden})")


class OnlineTargetPair:
    """BYOL's networks: online encoder (backbone + projector with batch norm), predictor, EMA target."""

    def __init__(self, config, channels: int, predictor_hidden: int, device: torch.device):
        self.encoder = build_encoder(config, channels, device, head_batchnorm=True)
        self.predictor = mlp(config.embedding_dim, predictor_hidden, config.embedding_dim, True).to(device)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.encoder.parameters(), *self.predictor.parameters()]

    def predict(self, view: torch.Tensor) -> torch.Tensor:
        _, projection = self.encoder.features_and_projection(view)
        return F.normalize(shard_map(self.encoder.ranks, self._predict, projection), dim=1)

    def _predict(self, projection: torch.Tensor) -> torch.Tensor:
        with compute_precision(projection.device, self.encoder.bf16):
            return self.predictor(projection).float()

    def networks(self) -> list[torch.nn.Module]:
        return [self.encoder, self.predictor, self.target]

    @torch.no_grad()
    def project(self, view: torch.Tensor) -> torch.Tensor:
        return self.target(view)

    def update_target(self, base_momentum: float, progress: float) -> None:
        ema_update(self.target, self.encoder, cosine_momentum(base_momentum, progress))

    def state_dict(self) -> dict:
        return {"encoder": self.encoder.state_dict(), "predictor": self.predictor.state_dict(),
                "target": self.target.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.predictor.load_state_dict(state["predictor"])
        self.target.load_state_dict(state["target"])


class BYOL(IntraImageMethod):
    Settings = BYOLSettings
    views_with_gradients = 2  # the online network predicts from both views

    def __init__(self, config, data, device):
        super().__init__(config, data, device)
        self.networks = OnlineTargetPair(config, data.channels, self.settings.predictor_hidden, device)
        self.encoder, self.bank_encoder = self.networks.encoder, self.networks.target

    def parameters(self):
        return self.networks.parameters()

    def network_modules(self):
        return self.networks.networks()

    def intra_step(self, images, indices, streams, with_loss=True):
        c = self.config
        views = [training_view(images, c.image_size, self.data.mean, self.data.std, streams.views, recipe)
                 for recipe in BYOL_VIEWS]
        predictions = [self.networks.predict(view) for view in views]  # 2 x (B x D)
        targets = [self.networks.project(view) for view in views]
        loss = None
        if with_loss:
            loss = (2 - 2 * cosine(predictions[0], targets[1])).mean() + (2 - 2 * cosine(predictions[1], targets[0])).mean()
        return IntraStep(loss, predictions[0], targets[1])

    def after_step(self, progress):
        self.networks.update_target(self.settings.target_momentum, progress)

    def state_dict(self):
        return self.networks.state_dict()

    def load_state_dict(self, state):
        self.networks.load_state_dict(state)


@dataclass(frozen=True)
class BYOLInterCLRSettings(BYOLSettings, ClusteringSettings):
    pass


class BYOLInterCLR(InterCLR, BYOL):
    Settings = BYOLInterCLRSettings
