"""The runner's options: what `python -m study.run` and `study.submit` ask for, read by the runner and its
launch checks (study.safety.preflight)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunOptions:
    """What to run and how: the runner's whole API (the command line fills it; study.submit too)."""
    study: str | None = None  # a study name, or "all"
    scale: str = "tiny"
    seeds: int | str = 3  # seeds 0..seeds-1 per factor value, or "auto": rounds up to max_seeds (study.rounds)
    max_seeds: int = 0
    epochs: int | None = None  # None: the profile's
    settings: tuple[str, ...] = ()  # KEY=VALUE overrides of trial config keys
    out: str | None = None  # None: runs/<scale>/<study>
    storage: str = ".ray_runs"
    resume: bool = False
    address: str | None = None
    max_concurrent: int = 0
    gpus_per_trial: float | None = None  # None: the profile's
    max_failures: int = 2
    checkpoint_every: int = 1
    inject_crash: int = 0
    dry_run: bool = False
    estimate: bool = False
    verbose: bool = False
    sweep: tuple[str, ...] = ()  # KEY=a,b,c: an ad-hoc study of one or two factors instead of a named one
    metric: str = "svm_map"  # a sweep's metric
    list: bool = False
    callback: tuple[str, ...] = ()  # experiment trackers fed through Tune's callbacks: wandb, mlflow
