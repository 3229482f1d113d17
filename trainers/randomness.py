"""Common random numbers: each source of a trial's randomness draws from a generator of its own.

Every stream's seed is derived from the trial's seed and the stream's name, so two trials with the
same seed start from the same weights and see the same data order and the same augmented views,
step for step, whatever else differs between them: a trial that samples hard negatives and one
that samples random negatives differ only in the negatives they draw. Their metrics then differ
by the factor under study plus far less noise than two independent runs would (Bouthillier et al.
2021), which is what the blocked analysis of a study relies on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

import torch


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named stream of a trial's seed; distinct streams are independent in practice."""
    digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class RandomStreams:
    """The generators a trial draws from; `order` lives on the CPU (the data loader's), the rest on the device."""
    order: torch.Generator  # the data order of each epoch
    views: torch.Generator  # augmentation: crops, flips, colour, blur
    intra_negatives: torch.Generator  # NPIDv2's uniform bank negatives
    inter_negatives: torch.Generator  # the inter branch's negative samplers
    inter_positives: torch.Generator  # the inter branch's same-cluster positive
    shuffle_bn: torch.Generator  # MoCo's batch shuffle of the keys

    @classmethod
    def create(cls, seed: int, device: torch.device) -> "RandomStreams":
        """Every stream of `seed`; also seeds torch's global generator, which builds the initial weights."""
        torch.manual_seed(stream_seed(seed, "weights"))
        return cls(**{f.name: torch.Generator("cpu" if f.name == "order" else device)
                      .manual_seed(stream_seed(seed, f.name)) for f in fields(cls)})

    def get_state(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name).get_state() for f in fields(self)}

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        for f in fields(self):
            getattr(self, f.name).set_state(state[f.name])
