"""The studies, as data: which config key each varies, over which values, with which settings fixed.

A study expands to one trial per (factor value, seed). Precedence, lowest first: TrialConfig
defaults, the scale profile, the study's fixed settings, the user's --set, then the factor value
and seed of the trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from study.profiles import ScaleProfile
from trainers.config import ConfigError, TrialConfig


@dataclass(frozen=True)
class StudySpec:
    name: str
    paper: str
    figure: str  # the replica's file stem, e.g. "fig6b"
    factor: str  # the TrialConfig key the study varies
    values: tuple
    metric: str  # the paper's metric stand-in, shown as the figure's main panel
    claim: str
    fixed: dict = field(default_factory=dict)


STUDIES = {s.name: s for s in [
    StudySpec(
        name="sampling", paper="InterCLR", figure="fig6b", factor="negative_sampling",
        values=("hard", "semi-hard", "random", "semi-easy"), metric="svm_map",
        claim="Semi-hard negatives are best; hard negatives are worse than random (Fig. 6b).",
        # Paper 5.3.1: online labels, zero margins. lambda is not varied here; we use the final recipe's 0.75.
        fixed={"intra_margin": 0.0, "inter_margin": 0.0, "loss_lambda": 0.75}),
]}


@dataclass(frozen=True)
class Trial:
    study: str
    factor: str
    value: object
    seed: int
    config: TrialConfig

    def metadata(self) -> dict:
        return {"study": self.study, "factor": self.factor, "value": self.value, "seed": self.seed,
                "config_hash": self.config.config_hash()}


def expand(spec: StudySpec, profile: ScaleProfile, seeds: int, overrides: dict | None = None) -> list[Trial]:
    """Every (value, seed) trial of a study at a scale; raises ConfigError on any bad setting."""
    overrides = dict(overrides or {})
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: need at least 1 seed")
    if spec.factor in overrides:
        raise ConfigError(f"{spec.factor} is what study {spec.name!r} varies; drop --set {spec.factor}=...")
    if "seed" in overrides:
        raise ConfigError("seeds come from --seeds N (seeds 0..N-1); drop --set seed=...")
    base = TrialConfig().replace(**{**profile.settings, **spec.fixed, **overrides})
    return [Trial(spec.name, spec.factor, value, seed, base.replace(**{spec.factor: value, "seed": seed}))
            for value in spec.values for seed in range(seeds)]
