"""What a study runs: its trials, each a TrialConfig built from the catalogue's data (catalogue,
which also states the precedence of settings) and a scale profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from catalogue import StudySpec, Times, recorded
from study.profiles import ScaleProfile
from trainers.config import DEFAULT_METHOD, ConfigError, TrialConfig


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
    """Every (value, seed) trial of a study at a scale; raises ConfigError on any bad setting.

    The study's fixed settings and the user's overrides apply to each trial whose method has the key
    (the `methods` study mixes methods); an override no trial can take is refused.
    """
    overrides = dict(overrides or {})
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: need at least 1 seed")
    for factor in spec.factors:
        if factor in overrides:
            raise ConfigError(f"{factor} is what study {spec.name!r} varies; drop --set {factor}=...")
    if "seed" in overrides:
        raise ConfigError("seeds come from --seeds N (seeds 0..N-1); drop --set seed=...")
    arms = {value: {**spec.fixed, **overrides, **spec.settings_of(value)} for value in spec.values}
    methods = {value: keys.get("method", DEFAULT_METHOD) for value, keys in arms.items()}
    takes = {value: set(TrialConfig.keys_of(method)) for value, method in methods.items()}
    for key in overrides:
        if not any(key in own for own in takes.values()):
            raise ConfigError(f"unknown config key {key!r} for study {spec.name!r}: none of its methods "
                              f"({', '.join(sorted(set(methods.values())))}) has it; drop --set {key}=...")
    trials = []
    for value, keys in arms.items():
        method_defaults = profile.config(method=methods[value]).to_dict()
        chosen = {key: setting.resolve(method_defaults[key]) if isinstance(setting, Times) else setting
                  for key, setting in keys.items() if key in takes[value] or key in spec.factors}
        base = profile.config(**chosen)
        trials += [Trial(spec.name, spec.factor, recorded(value), seed, base.replace(seed=seed)) for seed in range(seeds)]
    return trials
