"""The epoch-0 floor, measured once and shared by every trial that starts from the same network.

Every trial of a study evaluates its randomly initialised network at epoch 0. Trials of one seed
usually build the same initial network (a method builds its encoder first, under the seed), so
they would all measure the same kNN, SVM and probe numbers. A `FloorCache` keeps those numbers in
a folder (a study puts it in its run folder), one JSON file per floor key: a hash of the initial
encoder's weights and buffers, of the data's identity and of the evaluation settings, so two
trials share a floor exactly when they would compute the same one.

Trials run concurrently, possibly on several machines sharing the folder: a file lock makes a
second trial with the same key wait for the first to finish measuring rather than measure again,
and the result is written to a temporary file and renamed into place, so no reader ever sees a
partly written file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch

from trainers import evaluate, svm

# The keys besides the network's weights that decide the epoch-0 metrics: which images (and at
# which size and precision they pass the network), and how they are evaluated; the seed seeds the
# SVMs' folds and the probe's sample order.
FLOOR_KEYS = ("dataset", "train_subset", "test_subset", "load_size", "image_size", "precision", "knn_k",
              "knn_temperature", "svm_train_size", "svm_solver", "probe_epochs", "seed")
PROTOCOL = (evaluate.SVM_COSTS, evaluate.SVM_FOLDS, svm.POSITIVE_WEIGHT, svm.TOLERANCE, svm.MAX_ITERATIONS,
            evaluate.PROBE_BATCH_SIZE, evaluate.PROBE_LR, evaluate.PROBE_MOMENTUM)


def floor_key(encoder: torch.nn.Module, config, train_labels: torch.Tensor, test_labels: torch.Tensor) -> str:
    """Hash of what determines the floor: the encoder's parameter and buffer bytes (whichever method
    built it), the data (settings, and the labels as a cheap check that the same images are meant),
    the evaluation settings and the protocol's constants."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for labels in (train_labels, test_labels):
        digest.update(labels.cpu().to(torch.int64).numpy().tobytes())
    settings = {key: getattr(config, key) for key in FLOOR_KEYS}
    digest.update(json.dumps([settings, repr(PROTOCOL)], sort_keys=True).encode())
    return digest.hexdigest()[:16]


class FloorCache:
    """Epoch-0 metrics by floor key, one JSON file each in `folder`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def get(self, key: str, measure: Callable[[], dict]) -> dict:
        """The stored metrics of `key`; else `measure()`, stored for the next trial that asks."""
        path = self.folder / f"{key}.json"
        if path.exists():
            return json.loads(path.read_text())
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
            if path.exists():  # another trial measured it while this one waited
                return json.loads(path.read_text())
            metrics = measure()
            partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps(metrics))
            partial.replace(path)
            return metrics
