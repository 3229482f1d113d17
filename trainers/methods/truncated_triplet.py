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
from dataclasses import dataclass

import torch

from trainers.augment import training_view
from trainers.data import batches
from trainers.errors import ConfigError
from trainers.losses import deputy_ranks, parse_deputy, truncated_triplet
from trainers.methods.base import Method
from trainers.methods.byol import BYOLSettings, OnlineTargetPair
from trainers.randomness import RandomStreams


@dataclass(frozen=True)
class TruncatedTripletSettings(BYOLSettings):
    deputy: str = "rank-1"  # rank-K: the K-th most similar negative; smoothed-K: mean of ranks 2..2K+1; median
    triplet_gamma: float = 2.0
    triplet_margin: float = -100.0  # C; -100 never binds

    def check(self, trial) -> None:
        super().check(trial)
        rule, rank = parse_deputy(self.deputy)
        negatives = trial.batch_size - 1
        deepest = deputy_ranks(rule, rank, negatives)[1]
        if not 1 <= deepest <= negatives:
            raise ConfigError(f"deputy={self.deputy} needs rank {deepest}, but a batch of {trial.batch_size} has "
                              f"{negatives} negatives; lower the rank or raise batch_size")
        if not self.triplet_gamma > 0:
            raise ConfigError(f"triplet_gamma={self.triplet_gamma} must be > 0: it weighs the positive's distance, "
                              f"which the loss must shrink; the paper uses 2")


class TruncatedTriplet(Method):
    Settings = TruncatedTripletSettings
    views_with_gradients = 2  # the online network predicts from both views

    def __init__(self, config, data, device):
        super().__init__(config, data, device)
        self.rule, self.rank = parse_deputy(self.settings.deputy)
        self.networks = OnlineTargetPair(config, data.channels, self.settings.predictor_hidden, device)
        self.encoder = self.networks.encoder  # evaluation reads its backbone
        # The chance that another training image shares a query's class: the Bernoulli bound's p.
        counts = torch.bincount(data.train_labels()).double()
        total = counts.sum()
        self.same_class_probability = float((counts * (counts - 1)).sum() / (total * (total - 1)))

    def parameters(self):
        return self.networks.parameters()

    def network_modules(self):
        return self.networks.networks()

    def start(self, embeddings: torch.Tensor, streams: RandomStreams, measure: bool = True) -> dict:
        """Epoch 0: over-clustering of the initial networks, over one pass of the data without updates; a
        pass of metrics alone, so measure=False skips it."""
        if not measure:
            return {}
        saved = copy.deepcopy(self.networks.state_dict())
        # Summed on the device in float64 (what Python's floats held) and read once: no wait for the device per batch.
        counts = {key: torch.zeros((), dtype=torch.float64, device=self.device)
                  for key in ("omega", "event_b", "deputy_same_class", "clamped")}
        order = torch.Generator().manual_seed(self.config.seed)
        with torch.no_grad():
            # The loader's workers decode as in training (at ImageNet scale one process alone would take hours).
            for images, labels, _ in batches(self.data.train, self.config.batch_size, shuffle=True, generator=order,
                                             num_workers=self.config.num_workers, ranks=self.encoder.ranks):
                _, logs = self.training_step(images.to(self.device), labels.to(self.device), None, 0, streams)
                counts = {key: counts[key] + logs[key].double() for key in counts}
        self.networks.load_state_dict(saved)  # the pass ran in training mode; put back the batch-norm statistics
        return self.epoch_metrics({**{key: float(total) for key, total in counts.items()},
                                   "batches": len(self.data.train) // self.config.batch_size})

    def training_step(self, images, labels, indices, step, streams):
        c, s = self.config, self.settings
        views = [training_view(images, c.image_size, self.data.mean, self.data.std, streams.views) for _ in range(2)]
        predictions = [self.networks.predict(view) for view in views]
        targets = [self.networks.project(view) for view in views]
        loss_12, deputies, clamped_12 = truncated_triplet(predictions[0], targets[1], self.rule, self.rank,
                                                          s.triplet_gamma, s.triplet_margin)
        loss_21, _, clamped_21 = truncated_triplet(predictions[1], targets[0], self.rule, self.rank, s.triplet_gamma,
                                                   s.triplet_margin)
        omega, event_b, same_class = overclustering_events(labels, deputies)
        return (loss_12 + loss_21) / 2, {"omega": omega, "event_b": event_b, "deputy_same_class": same_class,
                                         "clamped": (clamped_12 + clamped_21) / 2, "batches": 1.0}

    def after_step(self, progress):
        self.networks.update_target(self.settings.target_momentum, progress)

    def epoch_metrics(self, totals: dict) -> dict:
        omega, event_b, count = totals.get("omega", 0.0), totals.get("event_b", 0.0), totals.get("batches", 0.0)
        return {"overclustering_given_a": omega / count if count else float("nan"),
                "overclustering_given_b": omega / event_b if event_b else float("nan"),
                "deputy_same_class_rate": totals.get("deputy_same_class", 0.0) / count if count else float("nan"),
                # Health: the share of queries whose loss max(gamma d+ - d-, C) sits at C, so gets no gradient.
                "triplet_clamped_share": totals.get("clamped", 0.0) / count if count else float("nan"),
                "negatives_per_query": self.config.batch_size - 1,
                "same_class_probability": self.same_class_probability}

    def state_dict(self):
        return self.networks.state_dict()

    def load_state_dict(self, state):
        self.networks.load_state_dict(state)


def overclustering_events(labels: torch.Tensor, deputies: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(Omega, B, share) of one batch as 0-dim tensors: Omega = some query's deputy shares its class (0/1);
    B = some class appears twice in the batch (0/1); share = the fraction of queries whose deputy shares
    their class."""
    same_class = (labels[deputies] == labels[:, None]).any(dim=1)
    event_b = (labels.sort().values.diff() == 0).any()  # sorted, a repeated class sits next to itself
    return same_class.any().float(), event_b.float(), same_class.float().mean()
