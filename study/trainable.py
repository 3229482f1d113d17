"""The Ray Tune trainable: runs trainers.fit for one trial, keeping its state in the run folder.

The trial's state file (trainers.checkpoint) lives in a folder fixed by the study's run folder
and the trial's name, not in Tune's per-attempt checkpoints: a retry after a crash, and a
`--resume` of the whole study in a later process, both find it there and continue from the
last saved epoch. Tune receives each epoch's row only as progress.
"""

from __future__ import annotations

import os
import signal

from ray import tune

from trainers.checkpoint import TrialState
from trainers.config import TrialConfig
from trainers.fit import fit, format_row

CRASH_MARKER = "crash-injected"


class TuneReporter:
    def __init__(self, state_dir: str, metadata: dict, last_epoch: int, checkpoint_every: int = 1,
                 crash_at_epoch: int = 0, verbose: bool = True):
        self.state = TrialState(state_dir)
        self.metadata, self.last_epoch = metadata, last_epoch
        self.checkpoint_every, self.crash_at_epoch, self.verbose = checkpoint_every, crash_at_epoch, verbose

    def restore(self, config_hash: str) -> dict | None:
        state = self.state.load(config_hash)
        if state is not None:
            print(f"[{self.metadata['value']} seed {self.metadata['seed']}] resuming after epoch {state['epoch']}",
                  flush=True)
        return state

    def report(self, row: dict, state: dict) -> None:
        epoch = row["epoch"]
        if self.crash_at_epoch and epoch == self.crash_at_epoch:
            self._crash_once()
        if self.verbose:
            print(f"[{self.metadata['value']} seed {self.metadata['seed']}] {format_row(row)}", flush=True)
        # The last epoch is always saved: the state file is where the study's results are read from.
        if epoch % self.checkpoint_every == 0 or epoch == self.last_epoch:
            self.state.save(state)
        tune.report({**self.metadata, **row})

    def _crash_once(self) -> None:
        """Fault injection for tests: die like a pre-empted node, losing this epoch's work."""
        marker = self.state.path.parent / CRASH_MARKER
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        print(f"[{self.metadata['value']} seed {self.metadata['seed']}] injected crash at epoch "
              f"{self.crash_at_epoch}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def run_trial(tune_config: dict) -> None:
    """tune_config["trial"]: {"config": TrialConfig keys, "metadata": identity, "state_dir": path,
    "floor_cache": path, "checkpoint_every": epochs, "crash_at_epoch": epoch or 0, "gpu_share": share,
    "verbose": whether to print each epoch's row}."""
    trial = tune_config["trial"]
    config = TrialConfig.create(**trial["config"])
    cap_gpu_memory(trial.get("gpu_share", 0.0), config)
    fit(config, TuneReporter(trial["state_dir"], trial["metadata"], config.epochs, trial["checkpoint_every"],
                             trial["crash_at_epoch"], trial.get("verbose", True)), trial["floor_cache"])


def cap_gpu_memory(share: float, config: TrialConfig) -> None:
    """A trial that shares a GPU (Ray's fractional share) may allocate only its share of the GPU's memory
    (less what its process holds outside PyTorch: study.packing.allocator_share), so that one trial's cache
    cannot starve the others; a whole GPU, or none, is left as it is."""
    import torch

    from study.packing import allocator_share

    if 0 < share < 1 and torch.cuda.is_available():
        gpu_bytes = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        torch.cuda.set_per_process_memory_fraction(allocator_share(share, config, gpu_bytes))
