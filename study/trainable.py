"""The Ray Tune trainable: runs trainers.fit for one trial and reports each epoch with a checkpoint.

Each report carries the trial's identity (study, factor, value, seed, config hash, code version)
and where it ran (hostname, torch and ray versions), so every stored row can be traced to the
config, seed and machine that made it. A retried trial restores
the last checkpoint and continues from the next epoch.
"""

from __future__ import annotations

import logging
import socket
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from trainers.config import TrialConfig
from trainers.fit import fit, format_row

STATE_FILE = "state.pt"


class TuneReporter:
    def __init__(self, metadata: dict):
        self.metadata = {**metadata, "hostname": socket.gethostname(), "torch_version": torch.__version__,
                         "ray_version": ray.__version__}

    def restore(self) -> dict | None:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)

    def report(self, row: dict, state: dict) -> None:
        print(f"[{self.metadata['value']} seed {self.metadata['seed']}] {format_row(row)}", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, Path(folder) / STATE_FILE)
            tune.report({**self.metadata, **row}, checkpoint=tune.Checkpoint.from_directory(folder))


def run_trial(tune_config: dict) -> None:
    """tune_config["trial"] is one grid point: {"config": TrialConfig keys, "metadata": identity}."""
    trial = tune_config["trial"]
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # one line per checkpoint
    fit(TrialConfig(**trial["config"]), TuneReporter(trial["metadata"]))
