"""One trial's configuration: the keys every method shares, and the chosen method's own keys.

A trial is fully described by a `TrialConfig`; the same config and seed give the same numbers on
CPU. Keys are set flat from the command line as `--set KEY=VALUE`, each parsed by its type, so a
typo or a bad value fails before anything runs. The shared keys live here; a method's own keys and
their checks live in the method's file (its `Settings` dataclass, see trainers.methods).

The config hash names the experiment, not the machine: it covers the shared keys that change what
is computed and the chosen method's keys. Execution keys (where the data lies, the device, thread
and worker counts) are recorded with the results but not hashed, so moving a run to another mount
or machine keeps its trial states usable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields

from trainers.errors import ConfigError
from trainers.evaluate import SVM_FOLDS
from trainers.svm import SOLVERS as SVM_SOLVERS
from trainers.methods.registry import METHODS
from trainers.settings import MethodSettings, check_finite, check_temperature

DATASETS = ("fashion-mnist", "cifar10", "imagefolder", "synthetic")
NETWORKS = ("small-cnn", "resnet18-cifar", "resnet50")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
CHOICES = {"dataset": DATASETS, "network": NETWORKS, "device": DEVICES, "method": tuple(METHODS),
           "precision": PRECISIONS, "svm_solver": SVM_SOLVERS}
EXECUTION_KEYS = ("data_root", "num_workers", "decode_on_device", "device", "threads", "deterministic",
                  "data_parallel")
DEFAULT_METHOD = "npidv2-interclr"
MAX_LR = 10.0  # twice BYOL's largest rate (LARS, 0.3 x 4096 / 256 = 4.8); plain SGD here diverges far below it

__all__ = ["ConfigError", "TrialConfig", "parse_assignment", "EXECUTION_KEYS"]


@dataclass(frozen=True)
class TrialConfig:
    seed: int = 0
    method: str = DEFAULT_METHOD  # a name in trainers.methods.METHODS

    # data
    dataset: str = "fashion-mnist"
    data_root: str = ""  # empty: the Debian location, then a torchvision download
    train_subset: int = 0  # 0 = the whole training split; else a class-balanced subset
    test_subset: int = 0
    load_size: int = 32  # ImageFolder images are resized to this square before augmentation
    image_size: int = 28  # side of the augmented crops fed to the network
    num_workers: int = 0  # DataLoader workers for ImageFolder data
    # ImageFolder: the workers only read the files and the trial decodes each batch on its device (JPEGs only)
    decode_on_device: bool = False

    # network
    network: str = "small-cnn"
    cnn_width: int = 32  # small-cnn channels: width, 2 x width, 4 x width
    head_hidden: int = 512  # the 2-layer MLP head (projector): backbone -> hidden -> embedding
    embedding_dim: int = 128

    # optimisation (NPIDv2: SGD 0.03, momentum 0.9, wd 1e-4, cosine, batch 256)
    precision: str = "fp32"  # bf16: the networks' forward passes under autocast; banks, logits, losses stay fp32
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4

    # evaluation
    knn_k: int = 200
    knn_temperature: float = 0.1
    svm_every_epoch: bool = False  # SVM mAP and linear probe at epoch 0 and the last epoch only, unless set
    eval_every: int = 1  # evaluate (kNN) every this many epochs; epoch 0 and the last epoch always
    svm_train_size: int = 5000  # the SVMs learn from a fixed class-balanced subset of this many training features
    svm_solver: str = "primal"  # liblinear's solver for the SVMs' one objective (trainers.svm); "dual" is the
    # reference code's and ~2.5x faster on nearly separable high-dimensional features (the imagenet profile's)
    probe_epochs: int = 50  # the linear probe's SGD budget, in epochs over the cached training features

    # execution
    device: str = "auto"
    threads: int = 1  # torch (and faiss) CPU threads for this trial
    deterministic: bool = False  # CUDA: deterministic kernels (bit-exact reruns) instead of cuDNN autotuning
    # Processes that split each batch's network work (one GPU each on CUDA; trainers.distributed): the same
    # computation as one process, up to the order of floating-point sums.
    data_parallel: int = 1

    # the method's own keys; None means its defaults
    settings: MethodSettings | None = None

    def __post_init__(self) -> None:
        _check_shared(self)
        settings_type = METHODS[self.method].Settings
        if self.settings is None:
            object.__setattr__(self, "settings", settings_type())
        elif type(self.settings) is not settings_type:
            raise ConfigError(f"settings of type {type(self.settings).__name__} given for method {self.method!r}; "
                              f"it takes {settings_type.__name__}")
        self.settings.check(self)

    def __getattr__(self, key: str):
        """The method's keys read flat, like the shared ones: config.num_negatives."""
        if key == "settings" or key.startswith("__"):  # not yet set while unpickling
            raise AttributeError(key)
        try:
            return getattr(self.settings, key)
        except AttributeError:
            raise AttributeError(f"method {self.method!r} has no config key {key!r}") from None

    @classmethod
    def create(cls, **keys) -> "TrialConfig":
        """A config from flat keys: shared ones and the method's own (the method's defaults otherwise)."""
        return cls().replace(**keys)

    @staticmethod
    def keys_of(method: str) -> list[str]:
        """Every key a trial of `method` takes: the shared ones, then the method's own."""
        return shared_keys() + [f.name for f in fields(METHODS[method].Settings)]

    def replace(self, **changes) -> "TrialConfig":
        """A copy with flat keys changed. A new `method` starts from that method's default settings."""
        method = changes.get("method", self.method)
        if method not in METHODS:
            raise ConfigError(f"method={method!r} is not one of {', '.join(METHODS)}")
        unknown = sorted(set(changes) - set(self.keys_of(method)))
        if unknown:
            raise ConfigError(unknown_key_message(unknown[0], method))
        shared_names = set(shared_keys())
        own = {key: value for key, value in changes.items() if key not in shared_names}
        shared = {key: value for key, value in changes.items() if key in shared_names}
        base = self.settings if method == self.method else METHODS[method].Settings()
        return dataclasses.replace(self, **shared, settings=dataclasses.replace(base, **own))

    def to_dict(self) -> dict:
        """Every key, flat: the shared ones and the method's own."""
        shared = {key: getattr(self, key) for key in shared_keys()}
        return {**shared, **dataclasses.asdict(self.settings)}

    def config_hash(self) -> str:
        """Short stable hash of the keys that change what is computed, the seed included."""
        hashed = {key: value for key, value in self.to_dict().items() if key not in EXECUTION_KEYS}
        return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:12]

    def check_against_data(self, train_size: int, num_classes: int) -> None:
        """The checks that need the dataset's size; raises ConfigError."""
        if self.batch_size > train_size:
            raise ConfigError(f"batch_size={self.batch_size} exceeds the {train_size} training samples; "
                              f"lower batch_size")
        if self.svm_train_size < train_size and self.svm_train_size // num_classes < SVM_FOLDS:
            raise ConfigError(f"svm_train_size={self.svm_train_size} leaves {self.svm_train_size // num_classes} "
                              f"training samples per class for the SVMs' {SVM_FOLDS}-fold cross-validation; raise "
                              f"svm_train_size to at least {SVM_FOLDS * num_classes}")
        self.settings.check_against_data(self, train_size, num_classes)


def shared_keys() -> list[str]:
    return [f.name for f in fields(TrialConfig) if f.name != "settings"]


def key_types(method: str) -> dict[str, str]:
    """Each key's type name ('int', 'float', 'bool', 'str'), as the dataclasses declare it."""
    return {f.name: f.type for f in [*fields(TrialConfig), *fields(METHODS[method].Settings)]
            if f.name != "settings"}


def parse_assignment(text: str, methods: list[str] | tuple[str, ...] = tuple(METHODS)) -> tuple[str, object]:
    """`KEY=VALUE` from the command line -> (key, value parsed by the key's type).

    The key must belong to at least one of `methods` (by default: to any method)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} is not KEY=VALUE; write e.g. --set lr=0.05")
    key, raw = text.split("=", 1)
    key = key.strip()
    types = {}
    for method in methods:
        types.update(key_types(method))
    if key not in types:
        raise ConfigError(unknown_key_message(key, *methods))
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


def unknown_key_message(key: str, *methods: str) -> str:
    valid = list(dict.fromkeys(k for method in methods for k in TrialConfig.keys_of(method)))
    owners = [name for name in METHODS if key in TrialConfig.keys_of(name)]
    where = f" (a key of method {', '.join(owners)})" if owners else ""
    return f"unknown config key {key!r} for method {', '.join(methods)}{where}; valid keys: {', '.join(valid)}"


def _check_shared(c: TrialConfig) -> None:
    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    check_finite(c)
    for key, allowed in CHOICES.items():
        value = getattr(c, key)
        require(value in allowed, f"{key}={value!r} is not one of {', '.join(allowed)}")
    for key in ("epochs", "train_subset", "test_subset", "num_workers"):
        require(getattr(c, key) >= 0, f"{key}={getattr(c, key)} must be >= 0")
    for key in ("batch_size", "cnn_width", "image_size", "load_size", "head_hidden", "embedding_dim", "knn_k",
                "threads", "eval_every", "svm_train_size", "probe_epochs", "data_parallel"):
        require(getattr(c, key) >= 1, f"{key}={getattr(c, key)} must be >= 1")
    check_temperature("knn_temperature", c.knn_temperature)
    require(c.data_parallel <= c.batch_size, f"data_parallel={c.data_parallel} ranks would leave some without an "
                                             f"image of a batch of {c.batch_size}; use at most {c.batch_size}")
    require(0 < c.lr <= MAX_LR, f"lr={c.lr} must be in (0, {MAX_LR:g}]; the profiles use 0.03")
    require(0 <= c.weight_decay < 1 and 0 <= c.momentum < 1, f"need weight_decay in [0, 1) (got {c.weight_decay}) "
                                                             f"and momentum in [0, 1) (got {c.momentum})")
    require(not c.decode_on_device or c.dataset == "imagefolder",
            f"decode_on_device=true decodes image files, but dataset={c.dataset} is held in memory already "
            f"decoded; drop it, or use dataset=imagefolder")
    require(c.image_size <= c.load_size or c.dataset != "imagefolder",
            f"image_size={c.image_size} is larger than load_size={c.load_size}; raise load_size")
