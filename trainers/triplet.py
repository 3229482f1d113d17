"""Truncated triplet (Wang et al., ICCV 2021): a BYOL-style online/target pair trained with a
triplet loss whose negative is a "deputy" drawn from the ranked in-batch negatives.

Per batch of n images and two augmented views: P = normalize(predictor(projector(backbone(view 1))))
from the online network, T = normalize(projector(backbone(view 2))) from the target network (an EMA
of the online backbone and projector, momentum rising from 0.99 to 1 on a cosine schedule). The loss
(trainers.losses.truncated_triplet) is symmetrised over the two views.

Over-clustering is measured with the true classes (analysis only): per batch, event B = the batch
holds two images of one class; event Omega = some query's deputy has the query's class (for a
smoothed deputy: any of the averaged negatives). Pr(Omega|A) = #Omega / #batches and
Pr(Omega|B) = #Omega / #B, counted on the view-1 -> view-2 direction. With few classes Omega is
near certain in any batch (10 classes, 128 images: 1 - 0.9^128), so each epoch also records the
share of queries whose deputy has their class, which a ranking that ignored classes would put at
about `same_class_probability` for a single deputy.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from trainers.augment import training_view
from trainers.config import parse_deputy
from trainers.data import batches
from trainers.losses import truncated_triplet
from trainers.networks import Encoder, mlp


class TruncatedTriplet:
    def __init__(self, config, data, device: torch.device):
        self.config, self.data, self.device = config, data, device
        self.rule, self.rank = parse_deputy(config.deputy)
        # The online encoder's head is the projector; evaluation reads its backbone.
        self.encoder = Encoder(config.network, data.channels, config.head_hidden, config.embedding_dim,
                               config.cnn_width, head_batchnorm=True).to(device)
        self.predictor = mlp(config.embedding_dim, config.predictor_hidden, config.embedding_dim, True).to(device)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        # The chance that another training image shares a query's class: the Bernoulli bound's p.
        counts = torch.bincount(data.train_labels()).double()
        total = counts.sum()
        self.same_class_probability = float((counts * (counts - 1)).sum() / (total * (total - 1)))

    def parameters(self):
        return [*self.encoder.parameters(), *self.predictor.parameters()]

    def start(self, embeddings: torch.Tensor, generator: torch.Generator) -> dict:
        """Epoch 0: over-clustering of the initial networks, over one pass of the data without updates."""
        saved = copy.deepcopy((self.encoder.state_dict(), self.predictor.state_dict(), self.target.state_dict()))
        counts = {"omega": 0.0, "event_b": 0.0, "deputy_same_class": 0.0}
        order = torch.Generator().manual_seed(self.config.seed)
        with torch.no_grad():
            for images, labels, _ in batches(self.data.train, self.config.batch_size, shuffle=True, generator=order):
                _, logs = self.training_step(images.to(self.device), labels.to(self.device), None, 0, generator)
                counts = {key: counts[key] + logs[key] for key in counts}
        # The pass ran in training mode; put back the batch-norm statistics it moved.
        encoder, predictor, target = saved
        self.encoder.load_state_dict(encoder)
        self.predictor.load_state_dict(predictor)
        self.target.load_state_dict(target)
        return self.epoch_metrics({**counts, "batches": len(self.data.train) // self.config.batch_size})

    def training_step(self, images: torch.Tensor, labels: torch.Tensor, indices, iteration: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        first = training_view(images, c.image_size, self.data.mean, self.data.std, generator)
        second = training_view(images, c.image_size, self.data.mean, self.data.std, generator)
        predictions = [F.normalize(self.predictor(self.encoder.head(self.encoder.backbone(v))), dim=1)
                       for v in (first, second)]
        with torch.no_grad():
            targets = [F.normalize(self.target.head(self.target.backbone(v)), dim=1) for v in (first, second)]
        loss_12, deputies = truncated_triplet(predictions[0], targets[1], self.rule, self.rank, c.triplet_gamma,
                                              c.triplet_margin)
        loss_21, _ = truncated_triplet(predictions[1], targets[0], self.rule, self.rank, c.triplet_gamma,
                                       c.triplet_margin)
        omega, event_b, same_class = overclustering_events(labels, deputies)
        return (loss_12 + loss_21) / 2, {"omega": omega, "event_b": event_b, "deputy_same_class": same_class,
                                         "batches": 1.0}

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """target <- tau target + (1 - tau) online, tau = 1 - (1 - tau_0)(cos(pi progress) + 1) / 2."""
        tau = 1 - (1 - self.config.target_momentum) * (math.cos(math.pi * progress) + 1) / 2
        for target, online in zip(self.target.parameters(), self.encoder.parameters()):
            target.mul_(tau).add_(online.detach(), alpha=1 - tau)
        for target, online in zip(self.target.buffers(), self.encoder.buffers()):
            target.copy_(online)

    def end_epoch(self, epoch: int) -> dict:
        return {}

    def epoch_metrics(self, totals: dict) -> dict:
        omega, event_b, count = totals.get("omega", 0.0), totals.get("event_b", 0.0), totals.get("batches", 0.0)
        return {"overclustering_given_a": omega / count if count else float("nan"),
                "overclustering_given_b": omega / event_b if event_b else float("nan"),
                "deputy_same_class_rate": totals.get("deputy_same_class", 0.0) / count if count else float("nan"),
                "negatives_per_query": self.config.batch_size - 1,
                "same_class_probability": self.same_class_probability}

    def state_dict(self) -> dict:
        return {"encoder": self.encoder.state_dict(), "predictor": self.predictor.state_dict(),
                "target": self.target.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.predictor.load_state_dict(state["predictor"])
        self.target.load_state_dict(state["target"])


def overclustering_events(labels: torch.Tensor, deputies: torch.Tensor) -> tuple[float, float, float]:
    """(Omega, B, share) of one batch: Omega = some query's deputy shares its class (0/1); B = some class
    appears twice in the batch (0/1); share = the fraction of queries whose deputy shares their class."""
    same_class = (labels[deputies] == labels[:, None]).any(dim=1)
    event_b = bool(torch.bincount(labels).max() >= 2)
    return float(same_class.any()), float(event_b), float(same_class.float().mean())
