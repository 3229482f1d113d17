"""The first command to run on a GPU: every method for 2 short epochs on the cifar code path, stopped
and resumed: `python -m study.measure.smoke [--methods NAME ...] [--set KEY=VALUE ...]`.

Each method trains with the cifar profile's network (ResNet-18 with the CIFAR stem), bf16 autocast and
deterministic kernels on synthetic 32 x 32 images (no data needed; `--set dataset=cifar10 --set
data_root=DIR` reads the real batches), once straight through and once stopped after epoch 1 and
resumed from its saved state. Printed per method: seconds, the last epoch's loss, peak memory, and
whether the resumed run equals the uninterrupted one bit for bit (deterministic kernels promise that
on a GPU too). Then `decode_on_device`: 24 JPEGs of several sizes decoded and resized on the trial's
device beside the loader workers' CPU path (equal bit for bit on a CPU; on a GPU nvJPEG and the
resize's float path move pixels; a mean difference under 2 levels passes). Then two paths the runs above
leave out, with one method (npidv2-interclr where it is among those run): a trial that decodes JPEG files
on its device (ImageFolder, `decode_on_device=true`, stopped and resumed bit for bit), and a trial with
the kernels real trials use (`deterministic=false`, cuDNN autotuning; k-means by `kmeans_backend=auto`,
faiss where it is installed), of which only a finite loss is required (`--methods-only` skips both).
Then, where 2 GPUs are visible (or with `--ranks 2` on a CPU, over gloo), every method again as one trial
over 2 ranks (trainers.distributed), straight and resumed, with its last loss beside the one-device
run's. Exits 1 if any run or the decoding check fails. `--set device=cpu` (with e.g. `network=small-cnn
image_size=16`) runs the same path on a CPU, as the tests do.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

from study.cli import OneLineParser
from study.profiles import PROFILES
from trainers import data as datasets
from trainers.checkpoint import TrialState
from trainers.config import ConfigError, TrialConfig, parse_assignment
from trainers.fit import device_type, fit
from trainers.methods.registry import METHODS

SMOKE_SETTINGS = {"dataset": "synthetic", "image_size": 32, "epochs": 2, "batch_size": 64, "eval_every": 1,
                  "deterministic": True, "num_negatives": 16, "clusters_per_class": 2, "min_cluster_size": 5,
                  "queue_size": 256, "knn_k": 20, "probe_epochs": 2, "kmeans_backend": "torch"}
UNCOMPARED = ("hostname", "torch_version", "peak_memory_mb")  # and every *_time_s column
# The largest mean difference, in levels of 255, between the pixels the device decodes and the workers': the bound of
# torchvision's own test of its GPU decoder against its CPU one (a single pixel may differ more).
DECODE_TOLERANCE = 2.0


class Stopped(Exception):
    """The planned interruption after an epoch."""


class StateKeeper:
    """Saves the trial's state after every epoch and prints nothing; with `stop_after`, stops there."""

    def __init__(self, folder: str, stop_after: int | None = None):
        self.state, self.stop_after = TrialState(folder), stop_after

    def restore(self, config_hash: str) -> dict | None:
        return self.state.load(config_hash)

    def report(self, row: dict, state: dict) -> None:
        self.state.save(state)
        if row["epoch"] == self.stop_after:
            raise Stopped


def same_rows(first: list[dict], second: list[dict]) -> bool:
    """Every computed value equal (NaN to NaN), timings and the machine aside."""
    def computed(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in UNCOMPARED and not k.endswith("_time_s")}

    def equal(a, b) -> bool:
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))

    return len(first) == len(second) and all(
        computed(a).keys() == computed(b).keys() and all(equal(computed(a)[k], computed(b)[k]) for k in computed(a))
        for a, b in zip(first, second))


def smoke_config(method: str, overrides: dict) -> TrialConfig:
    own = TrialConfig.keys_of(method)
    return PROFILES["cifar"].config(method=method, **{k: v for k, v in {**SMOKE_SETTINGS, **overrides}.items()
                                                      if k in own})


def smoke(config: TrialConfig) -> dict:
    """One method straight through, then stopped after epoch 1 and resumed; what to print."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="smoke-") as whole_folder, \
            tempfile.TemporaryDirectory(prefix="smoke-") as stopped_folder:
        whole = fit(config, StateKeeper(whole_folder))
        try:
            fit(config, StateKeeper(stopped_folder, stop_after=1))
        except Stopped:
            pass
        resumed = fit(config, StateKeeper(stopped_folder))
    return {"seconds": time.perf_counter() - started, "loss": whole[-1]["loss"],
            "peak_memory_mb": max(row["peak_memory_mb"] for row in whole), "resumes_exactly": same_rows(whole, resumed)}


def decode_difference(device: str) -> dict:
    """24 noise JPEGs (4 shapes, colour and grayscale) through both ImageFolder paths at load_size 32: the
    loader workers' canvases and those decoded on `device` (EncodedImages.to); the sizes must agree. The mean
    is over the images' own pixels, not the canvases' padding (zero in both, up to 47% of a canvas here)."""
    import torch

    with tempfile.TemporaryDirectory(prefix="smoke-jpegs-") as root:
        write_noise_jpegs(root, {"train": 12, "test": 12})
        workers = datasets.load_image_folder(root, 32)
        encoded = datasets.load_image_folder(root, 32, encoded=True)
        largest, sizes_equal, pixels, total, valid = 0, True, 0, 0, 0
        for (files, _, _), (canvases, _, _) in zip(datasets.batches(encoded.train, 16, shuffle=False),
                                                   datasets.batches(workers.train, 16, shuffle=False)):
            decoded = files.to(torch.device(device))
            sizes_equal &= torch.equal(decoded.sizes.cpu(), canvases.sizes)
            difference = (decoded.pixels.cpu().int() - canvases.pixels.int()).abs()
            largest, pixels = max(largest, int(difference.max())), pixels + int(difference.gt(0).sum())
            total += int(difference.sum())
            side = canvases.pixels.shape[-1]
            sizes = canvases.sizes if canvases.sizes is not None else torch.full((len(canvases), 2), side)
            valid += 3 * int(sizes.prod(dim=1).sum())
    return {"largest": largest, "sizes_equal": sizes_equal, "pixels_differing": pixels, "mean": total / valid}


def write_noise_jpegs(root: str, per_class: dict[str, int]) -> None:
    """Noise JPEGs of 4 shapes (wider, taller, smaller than 32 and square; every fifth grayscale), `per_class`
    of them in each of 2 classes per split: `root`/split/{a,b}/i.jpg."""
    from PIL import Image

    for split, count in per_class.items():
        for cls in ("a", "b"):
            folder = Path(root, split, cls)
            folder.mkdir(parents=True)
            for i in range(count):
                size = ((64, 48), (48, 64), (31, 17), (32, 32))[i % 4]
                mode = "L" if i % 5 == 0 else "RGB"
                Image.effect_noise(size, 30 + 5 * i).convert(mode).save(folder / f"{i}.jpg", quality=90)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_one(config: TrialConfig, failed: list[str], label: str, exact: bool = True) -> dict | None:
    """Smoke one config and print its line; a failure is added to `failed`. None: a config or data error
    (printed), which ends the command with exit 2. exact=False: the resumed run need not equal the
    uninterrupted one (kernels that are not deterministic on a GPU)."""
    try:
        result = smoke(config)
    except (ConfigError, datasets.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    except Exception:  # the point of a smoke test: report every method's failure, then go on
        failed.append(label.strip())
        print(f"  {label} FAILED\n{traceback.format_exc()}", flush=True)
        return {}
    ok = math.isfinite(result["loss"]) and (result["resumes_exactly"] or not exact)
    if not ok:
        failed.append(label.strip())
    equal = "yes" if result["resumes_exactly"] else ("NO" if exact else "no (not required)")
    print(f"  {label} {'ok' if ok else 'FAILED':<6} {result['seconds']:6.1f} s  loss {result['loss']:.4f}  "
          f"peak {result['peak_memory_mb']:.0f} MB  resumed run equals uninterrupted: {equal}", flush=True)
    return result


def run_other_paths(method: str, overrides: dict, failed: list[str]) -> bool:
    """The trial that decodes JPEG files on its device and the trial with fast kernels; False: a config or
    data error (printed), which ends the command with exit 2."""
    with tempfile.TemporaryDirectory(prefix="smoke-jpegs-") as root:
        write_noise_jpegs(root, {"train": 64, "test": 16})
        # Random negatives: every other cluster's entries are the pool, which the 128 images can fill.
        files = smoke_config(method, {**overrides, "dataset": "imagefolder", "data_root": root, "load_size": 32,
                                      "decode_on_device": True, "negative_sampling": "random"})
        if run_one(files, failed, f"{'decoding trial':<18}") is None:
            return False
    fast = smoke_config(method, {**overrides, "deterministic": False, "kmeans_backend": "auto"})
    return run_one(fast, failed, f"{'fast kernels':<18}", exact=False) is not None


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m study.measure.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="NAME")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--methods-only", action="store_true",
                        help="skip the decoding trial and the fast-kernels trial (e.g. to repeat one method)")
    parser.add_argument("--ranks", type=int, metavar="N",
                        help="ranks for the trials over several devices (default: 2 where 2 GPUs are visible, else "
                             "none)")
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_assignment(text) for text in args.set)
        configs = {method: smoke_config(method, overrides) for method in args.methods}
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    first = next(iter(configs.values()))
    print(f"smoke: {len(configs)} method(s), network {first.network}, precision {first.precision}, deterministic "
          f"{first.deterministic}, device {first.device}, {first.epochs} epochs of {first.dataset}", flush=True)
    failed, losses = [], {}
    for method, config in configs.items():
        result = run_one(config, failed, f"{method:<18}")
        if result is None:
            return 2
        losses[method] = result.get("loss")
    device = device_type(first)
    try:
        decoding = decode_difference(device)
        ok = decoding["sizes_equal"] and decoding["mean"] < DECODE_TOLERANCE
        print(f"  decode_on_device   {'ok' if ok else 'FAILED':<6} 24 JPEGs decoded on {device}: sizes equal to the "
              f"loader workers': {'yes' if decoding['sizes_equal'] else 'NO'}; pixels differing: "
              f"{decoding['pixels_differing']}, by {decoding['mean']:.2f} levels on average and at most "
              f"{decoding['largest']}", flush=True)
    except Exception:
        ok = False
        print(f"  decode_on_device   FAILED\n{traceback.format_exc()}", flush=True)
    if not ok:
        failed.append("decode_on_device")
    if not args.methods_only:
        other = "npidv2-interclr" if "npidv2-interclr" in configs else first.method
        print(f"  (the next two runs: {other})", flush=True)
        if not run_other_paths(other, overrides, failed):
            return 2
    ranks = args.ranks if args.ranks is not None else (2 if first.device == "cuda" and visible_gpus() >= 2 else 1)
    if ranks < 2:
        print(f"  trials over several GPUs: not run ({visible_gpus()} GPU visible; --ranks 2 runs them on a CPU)")
    for method, config in (configs.items() if ranks >= 2 else []):
        result = run_one(config.replace(data_parallel=ranks), failed, f"{method:<18} over {ranks} ranks")
        if result is None:
            return 2
        if "loss" in result and losses.get(method) is not None:
            print(f"  {'':<18} last loss over {ranks} ranks / on one device - 1: "
                  f"{result['loss'] / losses[method] - 1:+.1e}", flush=True)
    # and the decoding check, and the decoding and fast trials
    runs = len(configs) * (2 if ranks >= 2 else 1) + 1 + (0 if args.methods_only else 2)
    print(f"smoke: {runs - len(failed)} of {runs} runs passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
