"""One trial from start to finish, with no Ray: `python -m trainers.fit --set KEY=VALUE ...`.

Epoch 0 evaluates the randomly initialised network, its batch-norm statistics calibrated on the
training set (the floor every result is compared with; the same embeddings seed a memory bank;
with a floor cache, trials that start from the same network share one measurement of it); each
later epoch trains once over the data and evaluates every `eval_every` epochs and at the last
(rows of the others carry NaN metrics). After every epoch the reporter receives the metric row
and the full training state, RNGs included, so a run that restores that state continues exactly
as if it had never stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Protocol

import torch

from trainers import data as datasets
from trainers.checkpoint import CheckpointError, TrialState, check_writable
from trainers.config import ConfigError, TrialConfig, parse_assignment
from trainers.evaluate import calibrate_batch_norm, extract, knn_top1, linear_probe_top1, svm_map, svm_subset
from trainers.floors import FloorCache, floor_key
from trainers.methods.base import Method
from trainers.methods.registry import METHODS
from trainers.randomness import RandomStreams


class Reporter(Protocol):
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


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use device=cpu or device=auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def use_deterministic_kernels(deterministic: bool, device: torch.device) -> None:
    """On CUDA, either the fastest kernels (cuDNN autotuning; the bank's index_add and scatter sums then
    accumulate in a varying order, so reruns and resumes agree only to the last digits) or deterministic
    kernels throughout (bit-exact, slower). A CPU trial is deterministic either way."""
    if deterministic:
        # cuBLAS reads this when the process first uses it: a worker's first trial decides.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def fit(config: TrialConfig, reporter: Reporter | None = None, floor_cache: str | Path | None = None) -> list[dict]:
    """Train and evaluate one trial; returns one metric row per epoch (0 .. epochs).

    `floor_cache`: a folder where trials share their epoch-0 metrics (trainers.floors)."""
    reporter = reporter or ConsoleReporter()
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    use_deterministic_kernels(config.deterministic, device)
    data = datasets.load(config)
    config.check_against_data(len(data.train), data.num_classes)

    streams = RandomStreams.create(config.seed, device)  # seeds the initial weights too
    method = METHODS[config.method](config, data, device)
    optimizer = torch.optim.SGD(method.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    iterations_per_epoch = len(data.train) // config.batch_size
    total_iterations = max(1, config.epochs * iterations_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_iterations) / total_iterations)))

    def training_state(epoch: int, rows: list[dict]) -> dict:
        return {"epoch": epoch, "rows": rows, "method": method.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "streams": streams.get_state(), "torch_rng": torch.get_rng_state(),
                "config_hash": config.config_hash(), "device": device.type}

    machine = {"hostname": socket.gethostname(), "torch_version": torch.__version__}
    splits = evaluation_splits(data, config)
    state = reporter.restore(config.config_hash())
    if state is not None:
        if state.get("device", device.type) != device.type:  # its random streams live on that device
            raise CheckpointError(f"the saved state of this trial was made on {state['device']}, not {device.type}; "
                                  f"resume it with device={state['device']}, or start in a new output directory")
        if "streams" not in state:
            raise CheckpointError("this trial state predates per-source random streams and cannot continue "
                                  "exactly; start over in a new output directory")
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        streams.set_state(state["streams"])
        torch.set_rng_state(state["torch_rng"])
        rows, start = state["rows"], state["epoch"] + 1
    else:
        calibrate_batch_norm(method.encoder, splits[0], config.image_size, data.mean, data.std, device)
        floors = FloorCache(floor_cache) if floor_cache else None
        row, embeddings = evaluate(method, data, splits, config, device, epoch=0, with_svm=True, floors=floors)
        row.update(trained_gains(row, row))
        row.update(method.start(embeddings, streams))
        row.update(peak_memory_mb=peak_memory_mb(device), **machine)
        rows, start = [row], 1
        reporter.report(row, training_state(0, rows))

    # One loader per trial: its workers live across epochs, and every epoch's order comes from streams.order.
    train_batches = datasets.batches(data.train, config.batch_size, shuffle=True, generator=streams.order,
                                     num_workers=config.num_workers)
    for epoch in range(start, config.epochs + 1):
        epoch_started = time.perf_counter()
        totals: dict = {}  # per-step logs summed on the device, read once at the end of the epoch
        timer = StepTimer(device)
        method.encoder.train()
        for iteration, (images, labels, indices) in enumerate(train_batches):
            images, labels, indices = (x.to(device, non_blocking=True) for x in (images, labels, indices))
            step = (epoch - 1) * iterations_per_epoch + iteration
            timer.start()
            loss, logs = method.training_step(images, labels, indices, step, streams)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            method.after_step((step + 1) / total_iterations)
            timer.stop()
            for key, value in {"loss": loss.detach(), **logs}.items():
                totals[key] = totals.get(key, 0) + (value.double() if torch.is_tensor(value) else value)
        totals = {key: float(value) for key, value in totals.items()}
        relabel_started = time.perf_counter()
        totals.update(method.end_epoch(epoch))
        relabel_seconds = time.perf_counter() - relabel_started
        epoch_seconds = time.perf_counter() - epoch_started  # training and relabelling, not evaluation
        last = epoch == config.epochs
        extracted = method.take_train_extraction()  # taken every epoch, so it never outlives its epoch
        if last or epoch % config.eval_every == 0:
            row, _ = evaluate(method, data, splits, config, device, epoch, with_svm=last or config.svm_every_epoch,
                              train_extraction=extracted)
        else:
            row = {"epoch": epoch, **dict.fromkeys(METRICS, float("nan")), "eval_time_s": 0.0,
                   **evaluation_sizes(config, data)}
        row.update(trained_gains(row, rows[0]))
        row.update({key: value / iterations_per_epoch for key, value in totals.items() if key.startswith("loss")})
        row.update(method.epoch_metrics(totals))
        row["iter_time_s"] = timer.seconds() / iterations_per_epoch
        row["relabel_time_s"] = relabel_seconds
        row["epoch_time_s"] = epoch_seconds
        row.update(peak_memory_mb=peak_memory_mb(device), **machine)
        rows = rows + [row]
        reporter.report(row, training_state(epoch, rows))
    return rows


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


METRICS = ("knn_top1", "svm_map", "linear_top1")


def trained_gains(row: dict, floor: dict) -> dict:
    """Health: how far each metric has risen above the random network's (epoch 0), e.g. knn_top1_gain;
    NaN where the epoch was not evaluated."""
    return {f"{metric}_gain": row[metric] - floor[metric] for metric in METRICS}


def evaluation_splits(data, config) -> tuple:
    """The training and test sets' evaluation loaders, made once per trial so that their workers persist."""
    return tuple(datasets.evaluation_batches(split, config.num_workers) for split in (data.train, data.test))


def evaluate(method: Method, data, splits: tuple, config, device, epoch: int, with_svm: bool,
             train_extraction: tuple[torch.Tensor, torch.Tensor] | None = None,
             floors: FloorCache | None = None) -> tuple[dict, torch.Tensor]:
    """Metric row of the current encoder, and the training set's embeddings (to seed the bank).

    `splits`: the loaders from evaluation_splits. `train_extraction`: the training set's (features,
    embeddings) by the current encoder, if the method already has them. `floors`: where the metrics
    of this (initial) encoder may already be."""
    started = time.perf_counter()
    args = (config.image_size, data.mean, data.std, device)
    train_features, train_embeddings = train_extraction or extract(method.encoder, splits[0], *args)
    train_labels, test_labels = data.train_labels(), data.test_labels()

    def measure() -> dict:
        test_features, _ = extract(method.encoder, splits[1], *args)
        frozen = (train_features, train_labels, test_features, test_labels)
        metrics = {"knn_top1": knn_top1(*frozen, config.knn_k, config.knn_temperature),
                   "svm_map": float("nan"), "linear_top1": float("nan")}
        if with_svm:
            subset = svm_subset(train_labels, config.svm_train_size)
            metrics["svm_map"] = svm_map(train_features[subset.to(train_features.device)], train_labels[subset],
                                         test_features, test_labels, seed=config.seed)
            metrics["linear_top1"] = linear_probe_top1(*frozen, config.probe_epochs, seed=config.seed)
        return metrics

    if floors is None:
        metrics = measure()
    else:
        metrics = floors.get(floor_key(method.encoder, config, train_labels, test_labels), measure)
    row = {"epoch": epoch, **metrics, "eval_time_s": time.perf_counter() - started,
           **evaluation_sizes(config, data)}
    return row, train_embeddings


def evaluation_sizes(config, data) -> dict:
    """The evaluation's sizes, recorded in every row: kNN and the probe learn from the whole training set,
    the SVMs from a subset of it."""
    return {"eval_train_size": len(data.train), "eval_test_size": len(data.test),
            "svm_train_size": len(svm_subset(data.train_labels(), config.svm_train_size)),
            "probe_epochs": config.probe_epochs}


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by tensors on CUDA; the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
