"""One trial's configuration: every key, its type, its allowed values, and its checks.

A trial is fully described by a `TrialConfig`; the same config and seed give the same
numbers on CPU. Keys are set from the command line as `--set KEY=VALUE`, with the value
parsed by the key's type here, so a typo or a bad value fails before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, fields

from trainers.samplers import NEGATIVE_SAMPLING

DATASETS = ("fashion-mnist", "imagefolder", "synthetic")
NETWORKS = ("small-cnn", "resnet18-cifar", "resnet50")
KMEANS_BACKENDS = ("auto", "faiss", "torch")
LABEL_MODES = ("online", "offline")
METHODS = ("interclr", "truncated-triplet")
DEVICES = ("auto", "cpu", "cuda")
CHOICES = {"dataset": DATASETS, "network": NETWORKS, "negative_sampling": NEGATIVE_SAMPLING,
           "kmeans_backend": KMEANS_BACKENDS, "device": DEVICES, "label_mode": LABEL_MODES,
           "method": METHODS}


class ConfigError(ValueError):
    """A bad configuration value; the message names the problem and the fix."""


@dataclass(frozen=True)
class TrialConfig:
    seed: int = 0
    method: str = "interclr"  # or "truncated-triplet"

    # data
    dataset: str = "fashion-mnist"
    data_root: str = ""  # empty: the Debian location, then a torchvision download
    train_subset: int = 0  # 0 = the whole training split; else a class-balanced subset
    test_subset: int = 0
    load_size: int = 32  # ImageFolder images are resized to this square before augmentation
    image_size: int = 28  # side of the augmented crops fed to the network
    num_workers: int = 0  # DataLoader workers for ImageFolder data

    # network
    network: str = "small-cnn"
    cnn_width: int = 32  # small-cnn channels: width, 2 x width, 4 x width
    head_hidden: int = 512  # NPIDv2's 2-layer MLP head: backbone -> hidden -> embedding
    embedding_dim: int = 128

    # optimisation (NPIDv2: SGD 0.03, momentum 0.9, wd 1e-4, cosine, batch 256)
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4

    # InterCLR
    temperature: float = 0.1  # NPIDv2's tau
    loss_lambda: float = 0.75  # the paper's lambda: lambda * L_intra + (1 - lambda) * L_inter
    intra_margin: float = 0.0
    inter_margin: float = 0.0
    negative_sampling: str = "semi-hard"
    pool_fraction: float = 0.1  # semi-hard / semi-easy pools: this fraction of eligible entries
    num_negatives: int = 4096  # K, for both branches
    bank_momentum: float = 0.5  # w in v <- normalize((1 - w) v + w v_new)
    clusters_per_class: float = 10.0  # pseudo-label clusters as a multiple of the class count
    label_mode: str = "online"  # online: mini-batch k-means every iteration; offline: global k-means
    offline_every: int = 1  # offline: re-extract all features and rerun k-means every this many epochs
    kmeans_iters: int = 20
    kmeans_backend: str = "auto"  # auto: faiss when it imports, else the torch implementation
    rebalance_every: int = 10  # iterations between dissolving clusters smaller than the minimum
    min_cluster_size: int = 20

    # truncated triplet (Wang et al. 2021): loss = max(gamma d(x, x+) - d(x, deputy), C), d = -cosine
    deputy: str = "rank-1"  # rank-K: the K-th most similar negative; smoothed-K: mean of ranks 2..2K+1; median
    triplet_gamma: float = 2.0
    triplet_margin: float = -100.0  # C; -100 never binds
    target_momentum: float = 0.99  # EMA of the target network, rising to 1 on a cosine schedule (BYOL)
    predictor_hidden: int = 512

    # evaluation
    knn_k: int = 200
    knn_temperature: float = 0.1
    svm_every_epoch: bool = False  # SVM mAP at epoch 0 and the last epoch only, unless set

    # execution
    device: str = "auto"
    threads: int = 1  # torch (and faiss) CPU threads for this trial

    def __post_init__(self) -> None:
        _check(self)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def replace(self, **changes) -> "TrialConfig":
        unknown = sorted(set(changes) - set(self.keys()))
        if unknown:
            raise ConfigError(_unknown_key_message(unknown[0]))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Short stable hash of every key, the seed included: names the trial's results."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def num_clusters(self, num_classes: int) -> int:
        return max(2, round(self.clusters_per_class * num_classes))


def parse_assignment(text: str) -> tuple[str, object]:
    """`KEY=VALUE` from the command line -> (key, value parsed by the key's type)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} is not KEY=VALUE; write e.g. --set lr=0.05")
    key, raw = text.split("=", 1)
    key = key.strip()
    types = {f.name: f.type for f in fields(TrialConfig)}
    if key not in types:
        raise ConfigError(_unknown_key_message(key))
    return key, parse_value(key, types[key], raw.strip())


def parse_value(key: str, type_name: str, raw: str):
    try:
        if type_name == "bool":
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a valid {type_name}; give a {type_name} value") from None


def _unknown_key_message(key: str) -> str:
    return f"unknown config key {key!r}; valid keys: {', '.join(TrialConfig.keys())}"


def _check(c: TrialConfig) -> None:
    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    for key, allowed in CHOICES.items():
        value = getattr(c, key)
        require(value in allowed, f"{key}={value!r} is not one of {', '.join(allowed)}")
    for key in ("epochs", "train_subset", "test_subset", "num_workers"):
        require(getattr(c, key) >= 0, f"{key}={getattr(c, key)} must be >= 0")
    for key in ("batch_size", "cnn_width", "image_size", "load_size", "head_hidden", "embedding_dim", "num_negatives",
                "kmeans_iters", "rebalance_every", "knn_k", "threads", "offline_every"):
        require(getattr(c, key) >= 1, f"{key}={getattr(c, key)} must be >= 1")
    require(c.min_cluster_size >= 2, f"min_cluster_size={c.min_cluster_size} must be >= 2")
    require(0.0 < c.pool_fraction <= 1.0, f"pool_fraction={c.pool_fraction} must be in (0, 1]; the paper uses 0.1")
    require(0.0 <= c.loss_lambda <= 1.0, f"loss_lambda={c.loss_lambda} must be in [0, 1] (1 = intra only)")
    require(0.0 < c.bank_momentum <= 1.0, f"bank_momentum={c.bank_momentum} must be in (0, 1]")
    require(c.temperature > 0 and c.knn_temperature > 0, "temperature and knn_temperature must be > 0")
    require(c.lr > 0 and c.weight_decay >= 0 and 0 <= c.momentum < 1,
            "need lr > 0, weight_decay >= 0 and momentum in [0, 1)")
    require(c.clusters_per_class > 0, f"clusters_per_class={c.clusters_per_class} must be > 0")
    require(all(math.isfinite(v) for v in (c.intra_margin, c.inter_margin)), "margins must be finite numbers")
    require(0 <= c.target_momentum <= 1, f"target_momentum={c.target_momentum} must be in [0, 1]")
    require(c.predictor_hidden >= 1, f"predictor_hidden={c.predictor_hidden} must be >= 1")
    rule, rank = parse_deputy(c.deputy)
    negatives = c.batch_size - 1
    deepest = {"rank": rank, "smoothed": 2 * rank + 1, "median": negatives // 2}[rule]
    require(c.method != "truncated-triplet" or 1 <= deepest <= negatives,
            f"deputy={c.deputy} needs rank {deepest}, but a batch of {c.batch_size} has {negatives} negatives; "
            f"lower the rank or raise batch_size")
    require(c.image_size <= c.load_size or c.dataset != "imagefolder",
            f"image_size={c.image_size} is larger than load_size={c.load_size}; raise load_size")


def parse_deputy(text: str) -> tuple[str, int]:
    """"rank-5" -> ("rank", 5); "smoothed-5" -> ("smoothed", 5); "median" -> ("median", 0)."""
    if text == "median":
        return "median", 0
    rule, _, rank = text.partition("-")
    if rule not in ("rank", "smoothed") or not rank.isdigit() or int(rank) < 1:
        raise ConfigError(f"deputy={text!r} is not rank-K, smoothed-K (K >= 1) or median")
    return rule, int(rank)


def check_against_data(c: TrialConfig, train_size: int, num_classes: int) -> None:
    """The checks that need the dataset's size: counts that could not be drawn from the bank.

    Eligible inter negatives are the bank entries outside the query's cluster; with balanced
    clusters that is train_size * (1 - 1/clusters), and the pools are a fraction of it.
    """
    clusters = c.num_clusters(num_classes)
    if clusters > train_size:
        raise ConfigError(f"{clusters} clusters (clusters_per_class={c.clusters_per_class} x {num_classes} classes) "
                          f"exceed the {train_size} training samples; lower clusters_per_class")
    if c.batch_size > train_size:
        raise ConfigError(f"batch_size={c.batch_size} exceeds the {train_size} training samples; lower batch_size")
    eligible = train_size - math.ceil(train_size / clusters)
    if c.method != "interclr":
        return
    if c.loss_lambda < 1.0 and c.negative_sampling in ("semi-hard", "semi-easy"):
        eligible = math.floor(c.pool_fraction * eligible)
    if c.num_negatives > eligible:
        raise ConfigError(f"num_negatives={c.num_negatives} exceeds the ~{eligible} bank entries a query can draw "
                          f"from ({c.negative_sampling}, pool_fraction={c.pool_fraction}, {train_size} samples, "
                          f"{clusters} clusters); lower num_negatives or raise pool_fraction")
