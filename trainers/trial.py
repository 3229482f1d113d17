"""One trial's moving parts and its step, owned in one place.

`Trial(config)` builds what a config asks for: the device and its kernels, the data, the random
streams (which seed the initial weights), the method, the optimiser and the cosine learning-rate
schedule. Then:

    row = trial.start(floors)            # epoch 0: calibrate batch norm, measure the floor, start the method
    per batch: loss, logs = trial.step(images, labels, indices, step)
    totals = trial.end_epoch(epoch)      # relabelling and the like
    row = trial.evaluate_epoch(epoch, with_svm, train_extraction)
    trial.state_dict(epoch, rows) / trial.load_state_dict(state)

`trainers.fit` runs it for a whole trial, `study.measure.benchmark` times its `step` and `study.packing`
measures its networks, so what is timed and estimated is what runs.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import time

import torch

from trainers import data as datasets
from trainers.checkpoint import CheckpointError
from trainers.config import ConfigError, TrialConfig
from trainers.evaluate import calibrate_batch_norm, extract, knn_top1, linear_probe_top1, svm_map, svm_subset
from trainers.baseline import FloorCache, floor_key
from trainers.distributed import Ranks, distribute
from trainers.methods.registry import METHODS
from trainers.randomness import RandomStreams

METRICS = ("knn_top1", "svm_map", "linear_top1")


def resolve_device(name: str, rank: int = 0, ranks: int = 1) -> torch.device:
    """The trial's device; rank r of a trial over several ranks takes GPU r of those it sees."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use device=cpu or device=auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cuda":
        return torch.device(name)
    if ranks > torch.cuda.device_count():
        raise ConfigError(f"data_parallel={ranks} needs a GPU per rank, but this process sees "
                          f"{torch.cuda.device_count()}; lower data_parallel (--gpus-per-trial)")
    torch.cuda.set_device(rank)
    return torch.device("cuda", rank)


def use_deterministic_kernels(deterministic: bool, device: torch.device) -> None:
    """On CUDA, either the fastest kernels (cuDNN autotuning; the bank's index_add and scatter sums then
    accumulate in a varying order, so reruns and resumes agree only to the last digits) or deterministic
    kernels throughout (bit-exact, slower). A CPU trial is deterministic either way."""
    # cuBLAS reads this once, when the process first uses it, and a Ray worker runs trials of both kinds one
    # after another: set for every trial, or a deterministic trial after a fast one fails at its first matmul.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


class Trial:
    def __init__(self, config: TrialConfig, data: datasets.ImageData | None = None, ranks: Ranks | None = None):
        """`ranks`: this process's place among the trial's ranks (trainers.distributed); None: one process."""
        self.config, self.ranks = config, ranks
        self.device = resolve_device(config.device, *((ranks.rank, ranks.world) if ranks else (0, 1)))
        use_deterministic_kernels(config.deterministic, self.device)
        if self.device.type == "cuda":  # a Ray worker may have run other trials: their peaks are not this one's
            torch.cuda.reset_peak_memory_stats(self.device)
        self.data = data if data is not None else datasets.load(config)
        config.check_against_data(len(self.data.train), self.data.num_classes)
        self.streams = RandomStreams.create(config.seed, self.device)  # seeds the initial weights too
        self.method = METHODS[config.method](config, self.data, self.device)
        if ranks is not None:
            distribute(self.method.network_modules(), ranks)
        self.optimizer = torch.optim.SGD(self.method.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.iterations_per_epoch = len(self.data.train) // config.batch_size
        self.total_iterations = max(1, config.epochs * self.iterations_per_epoch)
        total = self.total_iterations
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
        # The evaluation loaders, made once so that their workers persist across epochs.
        self.splits = tuple(datasets.evaluation_batches(split, config.num_workers, ranks)
                            for split in (self.data.train, self.data.test))

    def start(self, floors: FloorCache | None = None, measure: bool = True, starts: dict | None = None) -> dict:
        """Epoch 0: batch-norm statistics calibrated on the training set, the floor metrics of the initial
        network (from `floors` where another trial measured them), and the method's start. With
        measure=False nothing is measured (an empty row: neither the floor nor the method's epoch-0 metrics):
        what a check before launch needs to take a step; there `starts` may keep the calibrated encoder and the
        training set's embeddings for the next config whose initial encoder is the same (calibrate_and_embed)."""
        c, d = self.config, self.data
        if measure:
            calibrate_batch_norm(self.method.encoder, self.splits[0], c.image_size, d.mean, d.std, self.device)
            row, embeddings = self.evaluate_epoch(0, with_svm=True, floors=floors)
            row.update(trained_gains(row, row))
        else:
            row, embeddings = {}, self.calibrate_and_embed(starts)
        row.update(self.method.start(embeddings, self.streams, measure))
        self.synchronise()
        return row

    def calibrate_and_embed(self, starts: dict | None) -> torch.Tensor:
        """Calibrate the encoder's batch norm and return the training set's embeddings by it. `starts` maps
        the initial encoder's floor key (its weights and buffers, the data, the evaluation settings) to the
        calibrated encoder state and the embeddings, so that configs whose networks start equal bit for bit
        (the settings of one method, at one seed) calibrate and embed once: both are functions of that key (to
        the last bits where several threads sum; at one thread, bit for bit)."""
        c, d, encoder = self.config, self.data, self.method.encoder
        if starts is not None:
            key = floor_key(encoder, c, d.train_labels(), d.test_labels())
            if key in starts:
                state, embeddings = starts[key]
                encoder.load_state_dict(state)
                return embeddings.clone()  # a method may write into its bank's initial features
        calibrate_batch_norm(encoder, self.splits[0], c.image_size, d.mean, d.std, self.device)
        _, embeddings = extract(encoder, self.splits[0], c.image_size, d.mean, d.std, self.device, c.precision)
        if starts is not None:
            starts[key] = ({name: value.clone() for name, value in encoder.state_dict().items()}, embeddings.clone())
        return embeddings

    def training_batches(self):
        """One loader per trial: its workers live across epochs, and every epoch's order comes from streams.order."""
        return datasets.batches(self.data.train, self.config.batch_size, shuffle=True, generator=self.streams.order,
                                num_workers=self.config.num_workers, ranks=self.ranks)

    def step(self, images, labels, indices, step: int) -> tuple[torch.Tensor, dict]:
        """One training iteration on a batch: the method's loss, backward, the optimiser and schedule, then
        the method's after-step updates (momentum targets). Returns the detached loss and the method's logs,
        all still on the device."""
        images, labels, indices = (x.to(self.device, non_blocking=True) for x in (images, labels, indices))
        loss, logs = self.method.training_step(images, labels, indices, step, self.streams)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.ranks is not None:
            self.ranks.sum_gradients(self.method.parameters())
        self.optimizer.step()
        self.schedule.step()
        self.method.after_step((step + 1) / self.total_iterations)
        return loss.detach(), logs

    def end_epoch(self, epoch: int) -> dict:
        totals = self.method.end_epoch(epoch)
        self.synchronise()
        return totals

    def synchronise(self) -> None:
        """Over several ranks: every replica takes rank 0's method state (bank, queue, pseudo-labels, networks),
        so that k-means and GPU sums that are not bit-reproducible cannot set the ranks' epochs apart."""
        if self.ranks is not None:
            state = self.method.state_dict()
            self.ranks.broadcast_state(state)
            self.method.load_state_dict(state)

    def evaluate_epoch(self, epoch: int, with_svm: bool, train_extraction: tuple | None = None,
                       floors: FloorCache | None = None) -> tuple[dict, torch.Tensor]:
        """Metric row of the current encoder, and the training set's embeddings (to seed the bank).

        `train_extraction`: the training set's (features, embeddings) by the current encoder, if the method
        already has them. `floors`: where the metrics of this (initial) encoder may already be."""
        c, d, encoder = self.config, self.data, self.method.encoder
        started = time.perf_counter()
        args = (c.image_size, d.mean, d.std, self.device, c.precision)
        train_features, train_embeddings = train_extraction or extract(encoder, self.splits[0], *args)
        train_labels, test_labels = d.train_labels(), d.test_labels()

        def metrics_of(test_features: torch.Tensor) -> dict:
            frozen = (train_features, train_labels, test_features, test_labels)
            metrics = {"knn_top1": knn_top1(*frozen, c.knn_k, c.knn_temperature),
                       "svm_map": float("nan"), "linear_top1": float("nan")}
            if with_svm:
                subset = svm_subset(train_labels, c.svm_train_size)
                # The trial's whole CPU share fits the SVMs' classes: its loader workers idle here, and over several
                # ranks so do the other ranks' CPUs, which Ray reserved for the trial.
                metrics["svm_map"] = svm_map(train_features[subset.to(train_features.device)], train_labels[subset],
                                             test_features, test_labels, seed=c.seed,
                                             workers=(c.threads + c.num_workers) * c.data_parallel,
                                             solver=c.svm_solver)
                metrics["linear_top1"] = linear_probe_top1(*frozen, c.probe_epochs, seed=c.seed)
            return metrics

        if self.ranks is None:
            def measure() -> dict:  # the test set is extracted only where the floor cache lacks the metrics
                return metrics_of(extract(encoder, self.splits[1], *args)[0])
        else:
            # Every rank's share of the network takes part in the extraction; rank 0 alone computes the
            # metrics (or finds them in the floor cache) and sends them to the others.
            test_features, _ = extract(encoder, self.splits[1], *args)

            def measure() -> dict:
                return metrics_of(test_features)

        metrics = None
        if self.ranks is None or self.ranks.leader:
            metrics = (measure() if floors is None else
                       floors.get(floor_key(encoder, c, train_labels, test_labels), measure))
        if self.ranks is not None:
            metrics = self.ranks.broadcast_object(metrics)
        row = {"epoch": epoch, **metrics, "eval_time_s": time.perf_counter() - started, **self.evaluation_sizes()}
        return row, train_embeddings

    def evaluation_sizes(self) -> dict:
        """The evaluation's sizes, recorded in every row: kNN and the probe learn from the whole training set,
        the SVMs from a subset of it."""
        c, d = self.config, self.data
        return {"eval_train_size": len(d.train), "eval_test_size": len(d.test),
                "svm_train_size": len(svm_subset(d.train_labels(), c.svm_train_size)),
                "probe_epochs": c.probe_epochs}

    def peak_memory_mb(self) -> float:
        return peak_memory_mb(self.device)

    def state_dict(self, epoch: int, rows: list[dict]) -> dict:
        """Everything a resume needs to continue exactly, random generators included."""
        state = {"epoch": epoch, "rows": rows, "method": self.method.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                 "streams": self.streams.get_state(), "torch_rng": torch.get_rng_state(),
                 "config_hash": self.config.config_hash(), "device": self.device.type,
                 "device_model": device_model(self.device)}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> tuple[list[dict], int]:
        """Restore a saved state; returns its rows and the next epoch to run."""
        if state.get("device", self.device.type) != self.device.type:  # its random streams live on that device
            raise CheckpointError(f"the saved state of this trial was made on {state['device']}, not "
                                  f"{self.device.type}; resume it with device={state['device']}, or start in a "
                                  f"new output directory")
        if "streams" not in state:
            raise CheckpointError("this trial state predates per-source random streams and cannot continue "
                                  "exactly; start over in a new output directory")
        saved_on, here = state.get("device_model"), device_model(self.device)
        if saved_on is not None and saved_on != here:
            # Allowed, so that a retry may land on another node type; but kernels, and on a GPU the random
            # draws (their launch grids follow the SM count), differ by model: the rows say where each ran.
            print(f"resuming a state saved on {saved_on} on {here}: from here on this trial's numbers need not "
                  f"match an uninterrupted run's bit for bit", flush=True)
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.streams.set_state(state["streams"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        return state["rows"], state["epoch"] + 1


@functools.lru_cache(maxsize=None)
def device_model(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name: what a trial's numbers depend on beyond its code and seed."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def trained_gains(row: dict, floor: dict) -> dict:
    """Health: how far each metric has risen above the random network's (epoch 0), e.g. knn_top1_gain;
    NaN where the epoch was not evaluated."""
    return {f"{metric}_gain": row[metric] - floor[metric] for metric in METRICS}


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by tensors on CUDA since the trial began; the process's peak resident
    memory on CPU (which a reused Ray worker carries over from its earlier trials)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
