"""InterCLR on any intra-image base method: the base's loss plus the inter-image branch.

    loss = lambda * L_base + (1 - lambda) * L_inter

The base method (NPIDv2, MoCov2, BYOL) implements `IntraImageMethod`: per batch it returns its
own loss, the queries the inter branch contrasts, and the features the branch's bank stores. An
InterCLR method lists `InterCLR` before its base, e.g. `class MoCov2InterCLR(InterCLR, MoCov2)`,
and its settings class adds `InterBranchSettings` to the base's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainers.data import Canvases, evaluation_batches
from trainers.evaluate import extract
from trainers.inter_image import InterImageBranch
from trainers.memory_bank import MemoryBank
from trainers.methods.base import Method
from trainers.networks import Encoder
from trainers.randomness import RandomStreams


@dataclass
class IntraStep:
    """What an intra-image base method computed for one batch of B images."""
    loss: torch.Tensor | None  # the base method's loss; None when it was not asked for (lambda = 0)
    query: torch.Tensor  # B x D unit-norm embeddings the inter branch contrasts (with gradient)
    bank_features: torch.Tensor  # B x D unit-norm features the inter branch's bank stores (no gradient)


class IntraImageMethod(Method):
    """A base method whose batches the inter-image branch can join."""
    bank: MemoryBank | None = None  # the base's own memory bank, if it keeps one; the inter branch then shares it
    bank_encoder: Encoder  # the network whose embeddings the inter branch's bank holds

    def intra_step(self, images: Canvases, indices: torch.Tensor, streams: RandomStreams,
                   with_loss: bool = True) -> IntraStep:
        raise NotImplementedError

    def training_step(self, images, labels, indices, step, streams):
        intra = self.intra_step(images, indices, streams)
        return intra.loss, {"loss_intra": intra.loss.detach()}


class InterCLR(IntraImageMethod):
    inter: InterImageBranch
    train_extraction: tuple[torch.Tensor, torch.Tensor] | None = None  # this epoch's, when bank_encoder is encoder

    def start(self, embeddings: torch.Tensor, streams: RandomStreams, measure: bool = True) -> dict:
        metrics = super().start(embeddings, streams, measure)
        bank = self.bank if self.bank is not None else MemoryBank(embeddings, self.settings.bank_momentum)
        self.inter = self.branch(bank)
        self.inter.start()  # k-means and the pools' check: what a check before launch is for
        if not measure:
            return metrics
        return {**metrics, **self.inter.label_quality(self.data.train_labels())}

    def branch(self, bank: MemoryBank) -> InterImageBranch:
        s = self.settings
        return InterImageBranch(s, bank, s.num_clusters(self.data.num_classes), self.config.seed, self.config.threads,
                                self.data.train_labels().to(self.device), ranks=self.encoder.ranks)

    def training_step(self, images, labels, indices, step, streams):
        s = self.settings
        intra = self.intra_step(images, indices, streams, with_loss=s.loss_lambda > 0)
        loss = torch.zeros((), device=self.device)
        logs = {}
        if s.loss_lambda > 0:
            loss = loss + s.loss_lambda * intra.loss
            logs["loss_intra"] = intra.loss.detach()
        if s.loss_lambda < 1:
            inter, health = self.inter.loss(intra.query, indices, streams)
            loss = loss + (1 - s.loss_lambda) * inter
            logs.update(loss_inter=inter.detach(), **health)
        logs.update(self.inter.write(indices, intra.bank_features, step))
        return loss, logs

    def end_epoch(self, epoch: int) -> dict:
        """Offline labels: every offline_every epochs, re-embed the training set and rerun k-means."""
        totals = super().end_epoch(epoch)
        if self.inter.wants_offline_labels(epoch):
            c = self.config
            batches = evaluation_batches(self.data.train, c.num_workers, self.encoder.ranks)
            features, embeddings = extract(self.bank_encoder, batches, c.image_size, self.data.mean, self.data.std,
                                           self.device, c.precision)
            totals["labels_changed"] = self.inter.relabel_offline(embeddings, epoch) * len(self.data.train)
            if self.bank_encoder is self.encoder:  # NPIDv2: the evaluation would extract the same again
                self.train_extraction = (features, embeddings)
        return totals

    def take_train_extraction(self):
        extraction, self.train_extraction = self.train_extraction, None
        return extraction

    def epoch_metrics(self, totals: dict) -> dict:
        return {**super().epoch_metrics(totals),
                "labels_changed": totals.get("labels_changed", 0.0) / len(self.data.train),
                "clusters_reseeded": totals.get("clusters_reseeded", 0.0),
                **self.inter.health(totals), **self.inter.label_quality(self.data.train_labels())}

    def state_dict(self) -> dict:
        state = super().state_dict()
        return state if self.bank is not None else {**state, "inter_bank": self.inter.bank.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        bank = self.bank if self.bank is not None else MemoryBank.from_state_dict(state["inter_bank"], self.device)
        self.inter = self.branch(bank)
