"""Experiment trackers for `python -m study.run ... --callback wandb|mlflow`, through Ray Tune's own logger
callbacks: every trial's epochs (metrics and health signals) and its configuration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from trainers.config import ConfigError

if TYPE_CHECKING:
    from study.options import RunOptions


TRACKERS = ("wandb", "mlflow")


def callbacks(options: RunOptions, study: str, run_folder: Path) -> list:
    """Tune's own logger callbacks for the trackers --callback names. W&B: project WANDB_PROJECT (default
    interclr-study), one group per scale and study, every trial's files in wandb/ under the run's storage folder;
    offline with WANDB_MODE=offline. MLflow: MLFLOW_TRACKING_URI, else MLflow's file store mlruns/ in the run's
    storage folder (local, no server); one experiment per scale and study."""
    made = []
    if "wandb" in options.callback:
        from ray.air.integrations.wandb import WandbLoggerCallback

        # dir: wandb writes into the run's storage itself; through Tune's end-of-trial copy of the trial's
        # folder a run still flushing when its trial ends is copied short.
        made.append(WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT", "interclr-study"),
                                        group=f"{options.scale}-{study}", log_config=True, excludes=["config"],
                                        dir=str(run_folder.resolve())))
    if "mlflow" in options.callback:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # MLflow 3 keeps its file store, but only when asked: it needs no database or server
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_folder.resolve() / "mlruns").as_uri()
        made.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=f"{options.scale}-{study}"))
    return made


def check(names: tuple[str, ...]) -> None:
    """Each --callback tracker's package is installed, and W&B can log in or is offline; raises ConfigError
    naming the fix (else Tune's callback would fail after the run had started)."""
    import importlib.util

    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"--callback {name} needs the {name} package; pip install -e '.[tracking]' "
                              f"(or drop --callback {name})")
    if "wandb" in names:
        from ray.air.integrations.wandb import _set_api_key  # the check Tune's callback makes when it starts

        try:
            _set_api_key()
        except ValueError:
            raise ConfigError("--callback wandb finds no W&B login; run `wandb login`, set WANDB_API_KEY, or log "
                              "offline with WANDB_MODE=offline") from None


# Passed on to a cluster job (study.submit), so its trackers log where and how the submitting shell asked.
ENVIRONMENT = ("WANDB_MODE", "WANDB_PROJECT", "WANDB_API_KEY", "WANDB_DIR", "MLFLOW_TRACKING_URI",
               "MLFLOW_ALLOW_FILE_STORE")
