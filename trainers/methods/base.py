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

from typing import TYPE_CHECKING, ClassVar

import torch

from trainers.settings import MethodSettings

if TYPE_CHECKING:
    from trainers.config import TrialConfig
    from trainers.data import Canvases, ImageData
    from trainers.randomness import RandomStreams


class Method:
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    views_with_gradients: ClassVar[int] = 1  # augmented views per image whose forward is kept for backward

    def __init__(self, config: "TrialConfig", data: "ImageData", device: torch.device):
        self.config, self.settings, self.data, self.device = config, config.settings, data, device

    def parameters(self) -> list[torch.nn.Parameter]:
        """What the optimiser trains."""
        raise NotImplementedError

    def network_modules(self) -> list[torch.nn.Module]:
        """Every network the method runs (trained, momentum and target ones): what a trial over several
        ranks splits (trainers.distributed)."""
        raise NotImplementedError

    def start(self, embeddings: torch.Tensor, streams: "RandomStreams", measure: bool = True) -> dict:
        """After the epoch-0 evaluation, given the training set's N x D initial embeddings (dataset order);
        returns extra epoch-0 metrics. measure=False: only what training needs (a check before launch
        takes a step and reads no metrics), no epoch-0 metrics."""
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
