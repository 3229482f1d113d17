"""Every method by the name a config gives it. Adding a method: its file, and one line here."""

from __future__ import annotations

from trainers.methods.base import Method
from trainers.methods.byol import BYOL, BYOLInterCLR
from trainers.methods.mocov2 import MoCov2, MoCov2InterCLR
from trainers.methods.npidv2 import NPIDv2, NPIDv2InterCLR
from trainers.methods.truncated_triplet import TruncatedTriplet

METHODS: dict[str, type[Method]] = {
    "npidv2": NPIDv2,
    "npidv2-interclr": NPIDv2InterCLR,
    "mocov2": MoCov2,
    "mocov2-interclr": MoCov2InterCLR,
    "byol": BYOL,
    "byol-interclr": BYOLInterCLR,
    "truncated-triplet": TruncatedTriplet,
}
