"""NPIDv2 (Wu et al. 2018, with the v2 recipe) and NPIDv2-InterCLR.

Per batch of images with dataset indices i and query embeddings v = f(aug(x_i)): the positive is
the sample's own bank entry bank[i], the K negatives are uniform over the bank, and the loss is
MarginNCE with the intra margin; then bank[i] <- normalize((1 - w) bank[i] + w v). In
NPIDv2-InterCLR the inter branch labels and draws from this same bank (w = 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainers.augment import NPIDV2, training_view
from trainers.errors import ConfigError
from trainers.inter_image import InterBranchSettings
from trainers.losses import cosine, cosine_many, margin_nce
from trainers.memory_bank import MemoryBank, rows
from trainers.methods.interclr import InterCLR, IntraImageMethod, IntraStep
from trainers.networks import build_encoder
from trainers.settings import MethodSettings, check_margin, check_temperature


@dataclass(frozen=True)
class NPIDv2Settings(MethodSettings):
    temperature: float = 0.1
    intra_margin: float = 0.0
    num_negatives: int = 4096  # K uniform bank negatives
    bank_momentum: float = 0.5  # w

    def check(self, trial) -> None:
        super().check(trial)
        check_temperature("temperature", self.temperature)
        check_margin("intra_margin", self.intra_margin)
        if not (self.num_negatives >= 1 and 0 < self.bank_momentum <= 1):
            raise ConfigError(f"need num_negatives >= 1 (got {self.num_negatives}) and bank_momentum in (0, 1] "
                              f"(got {self.bank_momentum})")


class NPIDv2(IntraImageMethod):
    Settings = NPIDv2Settings

    def __init__(self, config, data, device):
        super().__init__(config, data, device)
        self.encoder = build_encoder(config, data.channels, device)
        self.bank_encoder = self.encoder

    def parameters(self):
        return list(self.encoder.parameters())

    def network_modules(self):
        return [self.encoder]

    def start(self, embeddings, streams, measure=True):
        """The bank starts as the initial network's embeddings of the un-augmented training images."""
        self.bank = MemoryBank(embeddings, self.settings.bank_momentum)
        return super().start(embeddings, streams, measure)

    def intra_step(self, images, indices, streams, with_loss=True):
        s = self.settings
        view = training_view(images, self.config.image_size, self.data.mean, self.data.std, streams.views, NPIDV2)
        query = self.encoder(view)  # B x D, unit norm
        loss = None
        if with_loss:
            negatives = torch.randint(len(self.bank.features), (len(indices), s.num_negatives),
                                      generator=streams.intra_negatives, device=self.device)
            loss = margin_nce(cosine(query, self.bank.features[indices]),
                              cosine_many(query, rows(self.bank.features, negatives)), s.intra_margin, s.temperature)
        return IntraStep(loss, query, query.detach())

    def training_step(self, images, labels, indices, step, streams):
        intra = self.intra_step(images, indices, streams)
        self.bank.write(indices, intra.bank_features, relabel=False)
        return intra.loss, {"loss_intra": intra.loss.detach()}

    def state_dict(self):
        return {"encoder": self.encoder.state_dict(), "bank": self.bank.state_dict()}

    def load_state_dict(self, state):
        self.encoder.load_state_dict(state["encoder"])
        self.bank = MemoryBank.from_state_dict(state["bank"], self.device)


@dataclass(frozen=True)
class NPIDv2InterCLRSettings(NPIDv2Settings, InterBranchSettings):
    # The first base's defaults win (dataclass fields follow the MRO); restated here because they differ
    # from the inter branch's own: NPIDv2's tau for both branches, and one bank (w = 0.5) for both.
    temperature: float = 0.1
    bank_momentum: float = 0.5


class NPIDv2InterCLR(InterCLR, NPIDv2):
    Settings = NPIDv2InterCLRSettings
