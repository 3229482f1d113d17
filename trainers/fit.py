"""One trial from start to finish, with no Ray: `python -m trainers.fit --set KEY=VALUE ...`.

Epoch 0 evaluates the randomly initialised network, its batch-norm statistics calibrated on the
training set (the floor every result is compared with; the same embeddings seed a memory bank;
with a floor cache, trials that start from the same network share one measurement of it); each
later epoch trains once over the data and evaluates every `eval_every` epochs and at the last
(rows of the others carry NaN metrics). After every epoch the reporter receives the metric row
and the full training state, RNGs included, so a run that restores that state continues exactly
as if it had never stopped. The trial's parts and its step are `trainers.trial.Trial`; this module
runs it epoch by epoch and reports.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import sys
import time
from pathlib import Path
from typing import Protocol

import torch

from trainers import data as datasets
from trainers.checkpoint import TrialState, check_writable
from trainers.config import ConfigError, TrialConfig, parse_assignment
from trainers.baseline import FloorCache
from trainers.distributed import Ranks, follow, lead
from trainers.methods.registry import METHODS
from trainers.trial import METRICS, Trial, trained_gains


class Reporter(Protocol):
    state: TrialState | None  # where the trial's state is kept, if anywhere: the other ranks of the trial read it too

    def restore(self, config_hash: str) -> dict | None:
        """The state saved by the last report, or None to start fresh; raises CheckpointError."""

    def report(self, row: dict, state: dict) -> None:
        """One evaluated epoch: its metric row and the state to resume from."""


class ConsoleReporter:
    """Prints each row; with a directory, also keeps the latest state there to resume from."""

    def __init__(self, checkpoint_dir: str | None = None):
        self.state = TrialState(checkpoint_dir) if checkpoint_dir else None

    def restore(self, config_hash: str) -> dict | None:
        return self.state.load(config_hash) if self.state else None

    def report(self, row: dict, state: dict) -> None:
        print(format_row(row), flush=True)
        if self.state is not None:
            self.state.save(state)


def format_row(row: dict) -> str:
    def show(key: str, digits: int = 2) -> str:
        value = row.get(key)
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    return (f"epoch {row['epoch']:>3}  loss {show('loss', 3)}  knn_top1 {show('knn_top1')}  "
            f"svm_map {show('svm_map')}  linear {show('linear_top1')}  label_nmi {show('label_nmi', 3)}  "
            f"iter {show('iter_time_s', 3)}s  "
            f"epoch {show('epoch_time_s', 1)}s")


def fit(config: TrialConfig, reporter: Reporter | None = None, floor_cache: str | Path | None = None,
        ranks: Ranks | None = None) -> list[dict]:
    """Train and evaluate one trial; returns one metric row per epoch (0 .. epochs).

    `floor_cache`: a folder where trials share their epoch-0 metrics (trainers.baseline). With
    config.data_parallel > 1 this process is rank 0 and starts the others (trainers.distributed);
    `ranks` is given to each rank's own call."""
    reporter = reporter or ConsoleReporter()
    if config.data_parallel > 1 and ranks is None:
        return fit_over_ranks(config, reporter, floor_cache)
    torch.set_num_threads(config.threads)
    trial = Trial(config, ranks=ranks)
    machine = {"hostname": socket.gethostname(), "torch_version": str(torch.__version__)}
    state = reporter.restore(config.config_hash())
    if ranks is not None:
        ranks.check_same(-1 if state is None else state["epoch"], "the epoch to resume from")
    if state is not None:
        rows, start = trial.load_state_dict(state)
    else:
        row = trial.start(FloorCache(floor_cache) if floor_cache else None)
        row.update(peak_memory_mb=trial.peak_memory_mb(), **machine)
        rows, start = [row], 1
        reporter.report(row, trial.state_dict(0, rows))

    train_batches = trial.training_batches()
    for epoch in range(start, config.epochs + 1):
        epoch_started = time.perf_counter()
        totals: dict = {}  # per-step logs summed on the device, read once at the end of the epoch
        timer = StepTimer(trial.device)
        trial.method.encoder.train()
        for iteration, (images, labels, indices) in enumerate(train_batches):
            timer.start()
            loss, logs = trial.step(images, labels, indices, (epoch - 1) * trial.iterations_per_epoch + iteration)
            timer.stop()
            for key, value in {"loss": loss, **logs}.items():
                totals[key] = totals.get(key, 0) + (value.double() if torch.is_tensor(value) else value)
        totals = {key: float(value) for key, value in totals.items()}
        relabel_started = time.perf_counter()
        totals.update(trial.end_epoch(epoch))
        relabel_seconds = time.perf_counter() - relabel_started
        epoch_seconds = time.perf_counter() - epoch_started  # training and relabelling, not evaluation
        last = epoch == config.epochs
        extracted = trial.method.take_train_extraction()  # taken every epoch, so it never outlives its epoch
        if last or epoch % config.eval_every == 0:
            row, _ = trial.evaluate_epoch(epoch, with_svm=last or config.svm_every_epoch, train_extraction=extracted)
        else:
            row = {"epoch": epoch, **dict.fromkeys(METRICS, float("nan")), "eval_time_s": 0.0,
                   **trial.evaluation_sizes()}
        row.update(trained_gains(row, rows[0]))
        row.update({key: value / trial.iterations_per_epoch for key, value in totals.items() if key.startswith("loss")})
        row.update(trial.method.epoch_metrics(totals))
        row["iter_time_s"] = timer.seconds() / trial.iterations_per_epoch
        row["relabel_time_s"] = relabel_seconds
        row["epoch_time_s"] = epoch_seconds
        row.update(peak_memory_mb=trial.peak_memory_mb(), **machine)
        rows = rows + [row]
        reporter.report(row, trial.state_dict(epoch, rows))
    return rows


def fit_over_ranks(config: TrialConfig, reporter: Reporter, floor_cache: str | Path | None) -> list[dict]:
    """Rank 0 of a trial over config.data_parallel ranks: starts ranks 1.. (which load the same state
    folder on a resume and report nothing), runs its own share, and waits for them."""
    folder = str(reporter.state.path.parent) if getattr(reporter, "state", None) is not None else None
    return lead(config.data_parallel, device_type(config), follow_trial, (config, folder),
                lambda ranks: fit(config, reporter, floor_cache, ranks))


def follow_trial(rank: int, world: int, port: int, config: TrialConfig, state_folder: str | None) -> None:
    """Ranks 1.. of a trial: the whole trial, with rank 0 alone reporting and saving."""
    follow(rank, world, port, device_type(config), lambda ranks: fit(config, Follower(state_folder), None, ranks))


class Follower:
    """The reporter of ranks 1..: reads the trial's state on a resume, reports and saves nothing (rank 0 does)."""

    def __init__(self, state_folder: str | None):
        self.state = TrialState(state_folder) if state_folder else None

    def restore(self, config_hash: str) -> dict | None:
        return self.state.load(config_hash) if self.state else None

    def report(self, row: dict, state: dict) -> None:
        pass


def device_type(config: TrialConfig) -> str:
    return "cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) else "cpu"


class StepTimer:
    """Seconds inside training steps: CUDA events on a GPU, read once per epoch so that no step waits
    for the device; the wall clock on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.spans: list = []
        self.wall = 0.0

    def start(self) -> None:
        self.started = torch.cuda.Event(enable_timing=True) if self.cuda else time.perf_counter()
        if self.cuda:
            self.started.record()

    def stop(self) -> None:
        if self.cuda:
            stopped = torch.cuda.Event(enable_timing=True)
            stopped.record()
            self.spans.append((self.started, stopped))
        else:
            self.wall += time.perf_counter() - self.started

    def seconds(self) -> float:
        if not self.cuda:
            return self.wall
        torch.cuda.synchronize()
        return sum(start.elapsed_time(stop) for start, stop in self.spans) / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.fit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config key: " + "; ".join(f"{name}: {', '.join(TrialConfig.keys_of(name))}"
                                                          for name in METHODS))
    parser.add_argument("--checkpoint-dir", help="keep the latest state here and resume from it")
    parser.add_argument("--json-out", help="write the metric rows to this JSON file")
    parser.add_argument("--floor-cache", metavar="DIR", help="share epoch-0 metrics with other trials in this folder")
    args = parser.parse_args(argv)
    try:
        keys = dict(parse_assignment(text) for text in args.set)
        config = TrialConfig.create(**keys)
        if args.json_out:  # checked now, not after the whole training
            if Path(args.json_out).is_dir():
                raise ConfigError(f"--json-out {args.json_out} is a folder; give a file path")
            check_writable(Path(args.json_out).parent, "--json-out folder")
        if args.checkpoint_dir:
            check_writable(Path(args.checkpoint_dir), "--checkpoint-dir")
        if args.floor_cache and Path(args.floor_cache).exists() and not Path(args.floor_cache).is_dir():
            raise ConfigError(f"--floor-cache {args.floor_cache} is a file; give a folder")
        rows = fit(config, ConsoleReporter(args.checkpoint_dir), args.floor_cache)
    except (ConfigError, datasets.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"config": config.to_dict(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
