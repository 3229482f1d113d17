"""The interface every method implements, and the base of each method's own config keys.

`trainers.fit` drives a method through one trial, in this order:

    method = Method(config, data, device)       # networks built after RandomStreams.create(config.seed)
    row.update(method.start(embeddings, streams))     # once, after the epoch-0 evaluation
    per epoch:
        per batch: loss, logs = method.training_step(images, labels, indices, step, streams)
                   loss.backward(); optimizer.step(); method.after_step(progress)
        totals.update(method.end_epoch(epoch))
        extracted = method.take_train_extraction()   # reused by the epoch's evaluation
        row.update(method.epoch_metrics(totals))
    method.state_dict() / method.load_state_dict(state)   # after every epoch / on resume

On resume `start` is not called: `load_state_dict` must rebuild everything `start` creates.
`streams` (trainers.randomness.RandomStreams) holds one generator per source of randomness; a method
draws each kind of decision from its own stream, so trials that share a seed share those draws.

Evaluation reads `method.encoder`: its backbone gives the frozen features, its head the
embeddings that seed a memory bank. `method.parameters()` are what the optimiser trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar

import torch

from trainers.errors import ConfigError

if TYPE_CHECKING:
    from trainers.config import TrialConfig
    from trainers.data import Canvases, ImageData
    from trainers.randomness import RandomStreams


@dataclass(frozen=True)
class MethodSettings:
    """A method's own config keys (a frozen dataclass in the method's file) and their checks.

    Only the chosen method's keys enter a trial's config hash, so adding a key to one method
    leaves every other method's hashes as they were.
    """

    def check(self, trial: "TrialConfig") -> None:
        """Raise ConfigError for a value that makes no sense for this method (no data needed).

        Subclasses call this first: it refuses non-finite floats, which no range check catches."""
        check_finite(self)

    def check_against_data(self, trial: "TrialConfig", train_size: int, num_classes: int) -> None:
        """Raise ConfigError for a count the dataset cannot supply."""


# Cosine similarities lie in [-1, 1], so logits cos / T span 2 / T: 100 at this bound. Below it exp(cos / T)
# nears float32's limit (e^88; the kNN vote overflows at T < 0.0113) and softmax is a hard maximum.
MIN_TEMPERATURE = 0.02
# A margin shifts the positive's cosine; beyond +-2 (the cosines' whole range) the positive always wins or
# always loses, whatever the features, and the loss no longer ranks them.
MAX_MARGIN = 2.0


def check_finite(settings) -> None:
    """Every float key of a frozen settings dataclass must be a finite number (inf and nan parse as floats)."""
    for field in fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{field.name}={value} is not a finite number; give a finite value")


def check_temperature(key: str, value: float) -> None:
    if not value >= MIN_TEMPERATURE:
        raise ConfigError(f"{key}={value} is below {MIN_TEMPERATURE}: logits cos / T would span over "
                          f"{2 / MIN_TEMPERATURE:.0f} and overflow or saturate; give {key} >= {MIN_TEMPERATURE}")


def check_margin(key: str, value: float) -> None:
    if not -MAX_MARGIN <= value <= MAX_MARGIN:
        raise ConfigError(f"{key}={value} is outside [-{MAX_MARGIN:g}, {MAX_MARGIN:g}], the range of cosine "
                          f"differences, so it would decide every comparison alone; give a margin within it")


class Method:
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    views_with_gradients: ClassVar[int] = 1  # augmented views per image whose forward is kept for backward

    def __init__(self, config: "TrialConfig", data: "ImageData", device: torch.device):
        self.config, self.settings, self.data, self.device = config, config.settings, data, device

    def parameters(self) -> list[torch.nn.Parameter]:
        """What the optimiser trains."""
        raise NotImplementedError

    def start(self, embeddings: torch.Tensor, streams: "RandomStreams") -> dict:
        """After the epoch-0 evaluation, given the training set's N x D initial embeddings (dataset order);
        returns extra epoch-0 metrics."""
        return {}

    def training_step(self, images: "Canvases", labels: torch.Tensor, indices: torch.Tensor, step: int,
                      streams: "RandomStreams") -> tuple[torch.Tensor, dict[str, float]]:
        """One batch: images (trainers.data.Canvases) on the device, labels B true classes (for analysis only),
        indices B dataset positions. Returns the scalar loss and per-batch logs, summed over the epoch."""
        raise NotImplementedError

    def after_step(self, progress: float) -> None:
        """After the optimiser step; progress in (0, 1] is the share of all training steps done."""

    def end_epoch(self, epoch: int) -> dict:
        """After the last batch of an epoch; returns values added to the epoch's totals."""
        return {}

    def epoch_metrics(self, totals: dict) -> dict:
        """The epoch's metric columns from its summed logs."""
        return {}

    def take_train_extraction(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """After end_epoch: the training set's (features, embeddings) as `trainers.evaluate.extract`
        gives them for `encoder`, if end_epoch extracted them anyway, so evaluation need not do it
        again; None otherwise. Handed over once, so the features are not held past their epoch."""
        return None

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError
