"""The base of each method's own config keys and the checks their values share.

Below the methods (trainers/methods/ and the inter branch import it; it imports neither), so that the
trial config, the branch and every method read one definition of what a valid temperature or margin is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from trainers.errors import ConfigError

if TYPE_CHECKING:
    from trainers.config import TrialConfig


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
