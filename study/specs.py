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
class Times:
    """A setting relative to the scale profile's own value of the same key, e.g. Times(4) negatives."""
    multiple: float

    def resolve(self, profile_value):
        return type(profile_value)(round(self.multiple * profile_value))


@dataclass(frozen=True)
class StudySpec:
    name: str
    paper: str
    figure: str  # the replica's file stem, e.g. "fig6b"
    factor: str  # the TrialConfig key the study varies
    values: tuple  # Times(m) values are multiples of the profile's setting; results record m
    metric: str  # the paper's metric stand-in, shown as the figure's main panel
    claim: str
    fixed: dict = field(default_factory=dict)

    @property
    def levels(self) -> tuple:
        """The factor values as results record them (a Times value by its multiple)."""
        return tuple(_recorded(value) for value in self.values)


# Paper 5.3.1: the three main aspects use online labels and zero margins unless varied; lambda is
# not restated there, so it stays at the final recipe's 0.75 where the study does not vary it.
MAIN_ASPECTS = {"label_mode": "online", "intra_margin": 0.0, "inter_margin": 0.0, "loss_lambda": 0.75}
# The final recipe: online labels, semi-hard negatives, inter margin -0.5, lambda 0.75, 10x clusters,
# and 16,384 negatives, i.e. 4x the 4,096 of the ablations (here 4x the profile's K).
FINAL_RECIPE = {"label_mode": "online", "negative_sampling": "semi-hard", "intra_margin": 0.0, "inter_margin": -0.5,
                "loss_lambda": 0.75, "clusters_per_class": 10.0, "num_negatives": Times(4)}

STUDIES = {s.name: s for s in [
    StudySpec(
        name="labels", paper="InterCLR", figure="fig6a", factor="label_mode", values=("online", "offline"),
        metric="svm_map", claim="Online labels end higher than offline labels and get there sooner (Fig. 6a).",
        fixed={**MAIN_ASPECTS, "negative_sampling": "random", "offline_every": 1}),
    StudySpec(
        name="sampling", paper="InterCLR", figure="fig6b", factor="negative_sampling",
        values=("hard", "semi-hard", "random", "semi-easy"), metric="svm_map",
        claim="Semi-hard negatives are best; hard negatives are worse than random (Fig. 6b).",
        fixed=MAIN_ASPECTS),
    StudySpec(
        name="margin-intra", paper="InterCLR", figure="fig7a", factor="intra_margin",
        values=(-0.5, -0.25, 0.0, 0.25, 0.5), metric="linear_top1",
        claim="For the intra branch a positive margin helps and a negative one hurts (Fig. 7a).",
        fixed={**MAIN_ASPECTS, "negative_sampling": "semi-hard"}),
    StudySpec(
        name="margin-inter", paper="InterCLR", figure="fig7b", factor="inter_margin",
        values=(-1.0, -0.5, -0.25, 0.0, 0.25, 0.5), metric="linear_top1",
        claim="For the inter branch a negative margin (best near -0.5) beats zero; positive does not help (Fig. 7b).",
        fixed={**MAIN_ASPECTS, "negative_sampling": "semi-hard"}),
    StudySpec(
        name="lambda", paper="InterCLR", figure="fig8", factor="loss_lambda", values=(0.0, 0.25, 0.5, 0.75, 1.0),
        metric="svm_map", claim="Combining both branches beats either alone; best lambda near 0.75 (Fig. 8).",
        fixed={**MAIN_ASPECTS, "negative_sampling": "random"}),
    StudySpec(
        name="clusters", paper="InterCLR", figure="fig9a", factor="clusters_per_class", values=(1.0, 5.0, 10.0, 20.0),
        metric="svm_map", claim="Over-clustering helps, saturating near 10x the class count (Fig. 9a).",
        fixed=FINAL_RECIPE),
    StudySpec(
        name="negatives", paper="InterCLR", figure="fig9b", factor="num_negatives",
        values=(Times(1), Times(4), Times(16)), metric="svm_map",
        claim="4x more negatives helps marginally; 16x hurts (Fig. 9b).", fixed=FINAL_RECIPE),
    # Truncated triplet: negatives are the other m = batch - 1 targets of the batch; "median" is rank m/2.
    StudySpec(
        name="rank-k", paper="Truncated triplet", figure="table8", factor="deputy",
        values=("rank-1", "rank-5", "median", "smoothed-5"), metric="linear_top1",
        claim="rank-m/2 and rank-5 deputies beat rank-1 (Table 8).", fixed={"method": "truncated-triplet"}),
    StudySpec(
        name="triplet-margin", paper="Truncated triplet", figure="table7", factor="triplet_margin",
        values=(-0.3, -1.2, -100.0), metric="linear_top1",
        claim="Margin C = -100 and -1.2 are better than -0.3 (Table 7).",
        fixed={"method": "truncated-triplet", "deputy": "median"}),
    StudySpec(
        name="overclustering", paper="Truncated triplet", figure="table6", factor="deputy",
        values=("rank-1", "rank-5", "median"), metric="overclustering_given_a",
        claim="The over-clustering frequency falls as k grows; with k=1 it rises during training, with "
              "k=m/2 it falls (Table 6).", fixed={"method": "truncated-triplet"}),
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
    defaults = profile.config()

    def resolve(key: str, value):
        return value.resolve(getattr(defaults, key)) if isinstance(value, Times) else value

    fixed = {key: resolve(key, value) for key, value in spec.fixed.items()}
    base = defaults.replace(**{**fixed, **overrides})
    return [Trial(spec.name, spec.factor, _recorded(value), seed,
                  base.replace(**{spec.factor: resolve(spec.factor, value), "seed": seed}))
            for value in spec.values for seed in range(seeds)]


def _recorded(value):
    """The factor value as results record it: a Times value by its multiple."""
    return value.multiple if isinstance(value, Times) else value
