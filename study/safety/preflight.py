"""The checks study.run makes before it starts Ray or launches a trial; each raises ConfigError or
DataError naming the fix, so bad input costs one line and changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from study import files, outputs, packing
from study.profiles import PROFILES
from study.trials import Trial
from trainers import data as datasets
from trainers.checkpoint import check_writable
from trainers.config import ConfigError

if TYPE_CHECKING:
    from study.options import RunOptions


def check_options(options: RunOptions) -> None:
    """Options that name no usable folder, refused before any folder is made: an empty path (it would
    quietly mean the current folder or the default), or one the file system cannot hold."""
    data_roots = [text.partition("=")[2] for text in options.settings if text.startswith("data_root=")]
    for flag, value in (("--out", options.out), ("--storage", options.storage),
                        *(("--set data_root", root) for root in data_roots)):
        if value is not None and flag != "--set data_root" and not value.strip():
            raise ConfigError(f"{flag} is empty; give a folder, or leave {flag} out for the default")
        if value:
            check_path_length(flag, value)


def check_path_length(flag: str, value: str) -> None:
    """A path whose whole or any one name is longer than the file system allows fails only when a file is
    written there, perhaps hours in; say so now."""
    longest_name = max((len(part.encode()) for part in Path(value).parts), default=0)
    whole = len(os.path.abspath(value).encode())
    if longest_name > NAME_MAX or whole > PATH_MAX:
        raise ConfigError(f"{flag} {value[:40]}... is too long for the file system (a name of {longest_name} bytes, "
                          f"{NAME_MAX} allowed; {whole} bytes in all, {PATH_MAX} allowed); give a shorter path")


# Linux's limits (limits.h): one name, and a whole path, in bytes. A trial adds its own names below --storage.
NAME_MAX = 255
PATH_MAX = 4096 - 512


def check_resources(trials: list[Trial], options: RunOptions, cpus_available: int | None = None) -> None:
    """A trial that asks for more CPUs than any node has would wait in Ray's queue for ever."""
    config, profile = trials[0].config, PROFILES[options.scale]
    needed = cpus_per_trial(trials, options)
    available = cpus_available if cpus_available is not None else (os.cpu_count() or 1)
    if needed > available:
        where = "this machine" if options.address is None else "the cluster's largest node"
        raise ConfigError(f"each trial needs {needed:g} CPUs (threads {config.threads} + num_workers "
                          f"{config.num_workers}, or the profile's {profile.cpus_per_trial:g}), but {where} has "
                          f"{available}; lower threads or num_workers, or run on a larger node")


def gpus_per_trial(options: RunOptions) -> float:
    """The GPU share each trial asks Ray for: --gpus-per-trial, else the profile's."""
    return PROFILES[options.scale].gpus_per_trial if options.gpus_per_trial is None else options.gpus_per_trial


def cpus_per_trial(trials: list[Trial], options: RunOptions) -> float:
    """The CPUs each trial asks Ray for: per rank, at least what its torch threads and loader workers keep
    busy, raised to the profile's share; times the trial's ranks (config.data_parallel)."""
    config = trials[0].config
    return max(PROFILES[options.scale].cpus_per_trial, config.threads + config.num_workers) * config.data_parallel


def needs_gpu(trials: list[Trial], options: RunOptions) -> bool:
    return trials[0].config.device == "cuda" or gpus_per_trial(options) > 0


def check_devices(trials: list[Trial], options: RunOptions) -> None:
    """Trials that need a GPU must find one here: else Ray waits for it forever, or every trial fails.
    On a cluster (--address) the nodes' GPUs are checked once Ray is up (check_cluster_gpus)."""
    import torch

    if options.address is None and needs_gpu(trials, options) and not torch.cuda.is_available():
        if trials[0].config.device == "cuda":
            why, instead = "device=cuda", "--set device=cpu"
        elif options.gpus_per_trial is not None:
            why, instead = f"--gpus-per-trial {options.gpus_per_trial:g} asks for GPUs", "no --gpus-per-trial"
        else:
            why, instead = f"the {options.scale} profile gives each trial a GPU", "--scale tiny"
        raise ConfigError(f"{why}, but no CUDA device is visible here; run on a GPU machine, give --address of a "
                          f"cluster with GPUs, or use {instead}")
    whole = int(gpus_per_trial(options)) if gpus_per_trial(options) > 1 else 0
    if options.address is None and whole and torch.cuda.device_count() < whole:
        raise ConfigError(f"--gpus-per-trial {whole} runs each trial over {whole} GPUs, but this machine has "
                          f"{torch.cuda.device_count()}; give at most {torch.cuda.device_count()}, or a cluster "
                          f"(--address) with a node of {whole}")
    if gpus_per_trial(options) == 0 and trials[0].config.device == "cuda":
        source = ("--gpus-per-trial 0" if options.gpus_per_trial is not None
                  else f"the {options.scale} profile's GPU share of 0")
        raise ConfigError(f"{source} with device=cuda: Ray would give the trials no GPU; give --gpus-per-trial "
                          f"(0.25: four trials per GPU), or --set device=cpu")


def check_cluster_gpus(trials: list[Trial], options: RunOptions) -> None:
    import ray

    if needs_gpu(trials, options) and not ray.cluster_resources().get("GPU", 0):
        raise ConfigError(f"the Ray cluster at {options.address} has no GPU, but these trials need one; add GPU "
                          f"nodes, or use --scale tiny / --set device=cpu")
    alive = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    whole = gpus_per_trial(options) if gpus_per_trial(options) > 1 else 0
    most = max((int(resources.get("GPU", 0)) for resources in alive), default=0)
    if whole > most:  # a trial's ranks share one node (trainers.distributed)
        raise ConfigError(f"--gpus-per-trial {whole:g} runs each trial over {whole:g} GPUs of one node, but the "
                          f"cluster's largest node has {most}; give at most {most}")
    largest = max((int(resources.get("CPU", 0)) for resources in alive), default=0)
    check_resources(trials, options, largest)


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A cluster address must answer before Ray is started: Ray itself retries for many minutes."""
    if address is None or address == "auto":  # auto: Ray finds the local cluster, or fails at once
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.1:6379) or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({error.strerror or type(error).__name__} "
                          f"within {timeout_s:.0f} s); start it with `ray start --head`, or give its head's "
                          f"HOST:PORT") from None


IMAGE_CHECKS = "image-checks"  # under --storage: per image tree, the files already decoded whole


def check_data(trials: list[Trial], storage: Path | None = None) -> datasets.ImageData:
    """Load the dataset once in the driver, so a missing, damaged or too-small dataset fails before launch."""
    config = trials[0].config
    data = datasets.load(config)
    check_image_files(data, config.data_root, storage, jpeg_only=config.decode_on_device)
    for trial in trials:
        trial.config.check_against_data(len(data.train), data.num_classes)
    return data


def check_image_files(data: datasets.ImageData, data_root: str, storage: Path | None,
                      jpeg_only: bool = False) -> None:
    """Every image file of the dataset decodes whole (`jpeg_only`: as a JPEG, for decode_on_device), on all of
    this machine's CPUs. Files decoded by an earlier check of the same kind with the same size and
    modification time are not decoded again: a manifest per image tree and kind under --storage records
    them (only paths and numbers, read as JSON)."""
    paths = datasets.image_files(data)
    if not paths:
        return
    tree = str(Path(data_root).resolve()) + (" as JPEGs" if jpeg_only else "")
    manifest = (storage / IMAGE_CHECKS / f"{hashlib.sha256(tree.encode()).hexdigest()[:16]}.json"
                if storage is not None else None)
    checked = read_image_manifest(manifest)
    stamps = {path: stamp_of(path) for path in paths}
    todo = [path for path in paths if checked.get(path) != stamps[path]]
    print(f"checking that {len(todo)} of {len(paths)} image files decode ({len(paths) - len(todo)} unchanged since "
          f"an earlier check)", flush=True)
    datasets.check_images(todo, workers=os.cpu_count() or 1, jpeg_only=jpeg_only)
    if manifest is not None and todo:
        try:
            manifest.parent.mkdir(parents=True, exist_ok=True)
            files.replace_file(manifest, json.dumps({"files": {**checked, **{p: stamps[p] for p in todo}}}))
        except OSError as error:  # the check itself passed; only its record is lost
            print(f"could not record the image check in {manifest} ({error.strerror}); the next run checks again")


def stamp_of(path: str) -> list[int]:
    status = os.stat(path)
    return [status.st_size, status.st_mtime_ns]


def read_image_manifest(path: Path | None) -> dict[str, list[int]]:
    """The files an earlier check decoded, {path: [size, mtime_ns]}; empty when there is none or it is not
    one (a damaged record only costs a full check)."""
    if path is None or not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(entries, dict):
        return {}
    return {key: value for key, value in entries.items() if isinstance(key, str) and isinstance(value, list)
            and len(value) == 2 and all(type(v) is int for v in value)}


# A plan is stepped before launch where that is cheap: in-memory data of at most this many training images.
STEP_CHECK_MAX_IMAGES = 20000


def check_first_steps(trials: list[Trial], data: datasets.ImageData, starts: dict) -> None:
    """Each distinct setting of the plan (seeds aside) builds its trial, starts its method on the initial
    network's embeddings (bank, k-means labels, pools) and takes one training step, so that settings which
    pass every range check yet fail in a trial are refused before launch, in one line. Settings whose networks
    start equal (most of a study's, and the same method's across the studies of one launch) share one
    batch-norm calibration and embedding of the training set, kept in `starts` (Trial.calibrate_and_embed)."""
    from trainers.trial import Trial as Runnable

    if datasets.image_files(data) or len(data.train) > STEP_CHECK_MAX_IMAGES:
        print("not stepped before launch (image files or a large set): each trial checks itself as it starts")
        return
    distinct = {t.config.replace(seed=0).config_hash(): t for t in trials}
    for trial in distinct.values():
        config = trial.config.replace(seed=0, device="cpu", deterministic=False)
        try:
            runnable = Runnable(config, data)
            runnable.start(measure=False, starts=starts)
            images, labels, indices = next(iter(runnable.training_batches()))
            runnable.step(images, labels, indices, step=0)
        except ConfigError as error:
            raise ConfigError(f"{trial.factor}={trial.value}: {error}") from None
        except Exception as error:  # an assertion or a shape the checks did not foresee
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ConfigError(f"{trial.factor}={trial.value} fails at its first step ({type(error).__name__}: "
                              f"{message}); change the setting it names, or report the case") from None


def check_gpu_packing(trials: list[Trial], data: datasets.ImageData, options: RunOptions) -> None:
    """The trials that share a GPU fit in the memory of the GPU this driver sees; raises ConfigError."""
    share = gpus_per_trial(options)
    if share == 0 or trials[0].config.device == "cpu":
        return
    count = packing.trials_per_gpu(share)
    # Every distinct setting (seeds aside): K, the sampler and the batch change the estimate, not only the method.
    distinct = {t.config.replace(seed=0).config_hash(): t.config for t in trials}
    largest = max((packing.estimate(config, data) for config in distinct.values()), key=packing.TrialMemory.total)
    gpu_bytes = packing.visible_gpu_bytes()
    if gpu_bytes is None:
        print(f"GPU memory per trial (the largest setting) {largest.describe()}; no GPU visible to this driver, so "
              f"not checked that {count} trial(s) fit in one GPU")
        return
    packing.check_fits(share, largest, gpu_bytes)
    print(f"{count} trial(s) per GPU of {gpu_bytes / packing.GIB:.1f} GiB, each {largest.describe()}")


def check_launch(options: RunOptions, plans: dict[str, list[Trial]], outs: dict[str, Path]) -> dict:
    """Every check that needs the data, the folders or the cluster; returns each study's manifest when
    --resume continues it. Raises ConfigError or DataError."""
    starts: dict = {}  # calibrated initial encoders and their embeddings, shared by the studies' first steps
    for trials in plans.values():
        check_devices(trials, options)  # a missing GPU, or GPU memory, says more than a missing CPU
        # A dry run writes nothing: the image check then keeps no record of what it decoded.
        data = check_data(trials, None if options.dry_run else Path(options.storage))
        check_gpu_packing(trials, data, options)
        if options.address is None:
            check_resources(trials, options)
        check_first_steps(trials, data, starts)
    # With several studies, --resume continues the ones that started and starts the rest, so that a
    # stopped `all` run resumes as a whole; one study named alone must have something to resume.
    started = {name: out.is_dir() and outputs.Manifest.load(out) is not None for name, out in outs.items()}
    resumed = {name: outputs.check_output(outs[name], trials, options.resume and (len(plans) == 1 or started[name]))
               for name, trials in plans.items()}
    for name, manifest in resumed.items():
        check_writable(outs[name], "output folder")
        if manifest is None:
            check_writable(Path(options.storage), "--storage folder")
        else:
            check_writable(Path(manifest.run_folder), "run folder")
            outputs.last_epochs(plans[name], manifest.run_folder)  # every state file must load
    check_reachable(options.address)
    return resumed
