"""The positive control: at which CPU scale does the inter-image branch measurably help its base?

    python -m study.measure.positive_control --out results/positive-control [--scales NAME ...]
                                             [--seeds 2] [--workers 2] [--arms base inter]

Before an ablation inside the inter branch can show anything, the branch itself must help: here
NPIDv2-InterCLR (lambda 0.75, random negatives, inter margin 0, online labels: the paper's lambda
protocol, section 5.3.1) against NPIDv2 alone ("base") and against the same method at lambda 1
("lambda-1", the intra branch alone inside InterCLR). Each candidate scale is the tiny profile with
some levers moved (training-set size, epochs, width, K, clusters per class, dataset); K keeps the
profile's K / N. Arms of one seed share the data order, initialisation and augmentations.

NPIDv2-InterCLR at lambda 1 computes NPIDv2 bit for bit (tests/test_methods.py), so "inter - base" is
also the lambda protocol's "lambda 0.75 - lambda 1"; the lambda-1 arm is there to show it on real data.

Each trial runs `trainers.fit` in its own process (one torch thread each, `--workers` at a time) and
keeps its rows in OUT/trials/CONFIG_HASH.json, so an interrupted search continues where it stopped,
and a trial that two scales share (NPIDv2 ignores the cluster keys) runs once. Written:
  search.csv   one row per (scale, arm, seed): the last epoch's metrics, trained gains over the epoch-0
               floor, health signals (inter loss / chance, true-class shares of positives and
               negatives, pseudo-label purity and NMI) and seconds per trial;
  effects.csv  per scale and comparison (inter - base, inter - lambda-1) and metric: the mean paired
               difference over seeds with its 95% t interval, the seed SD of the difference, the
               trained gain and the health signals of the inter arm, and the seconds per trial;
  RUN.md       the command, the code versions the trials ran, the processor, torch and the date.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from scipy import stats

from study import files
from study.cli import OneLineParser
from study.profiles import PROFILES
from study.run import code_version
from trainers.config import TrialConfig

# The candidate scales: the tiny profile's settings with these moved. K = 16 per 5,000 images (the
# profile's K / N, the paper's 4096 / 1.28M) and min_cluster_size 8 per 5,000 / 50 clusters.
SCALES = {
    "tiny": {},
    "n20k-e16": {"train_subset": 20000, "epochs": 16, "num_negatives": 64, "eval_every": 4},
    "n20k-e16-c1": {"train_subset": 20000, "epochs": 16, "num_negatives": 64, "eval_every": 4,
                    "clusters_per_class": 1.0},
    # Smaller clusters make the positive a near neighbour (purer in class): 500 clusters of ~40 images.
    "n20k-e16-c50": {"train_subset": 20000, "epochs": 16, "num_negatives": 64, "eval_every": 4,
                     "clusters_per_class": 50.0},
    "n20k-e16-w32": {"train_subset": 20000, "epochs": 16, "num_negatives": 64, "eval_every": 4, "cnn_width": 32},
    "n20k-e32": {"train_subset": 20000, "epochs": 32, "num_negatives": 64, "eval_every": 8},
    "n60k-e6": {"train_subset": 0, "epochs": 6, "num_negatives": 192, "eval_every": 3, "min_cluster_size": 24},
    # CIFAR-10: a random network's features sit far lower than on Fashion-MNIST (whose random-CNN floor is
    # ~78 linear top-1 of a ~92 ceiling), so training has room to show.
    "cifar-n20k-e16": {"dataset": "imagefolder", "load_size": 32, "image_size": 32, "train_subset": 20000,
                       "epochs": 16, "num_negatives": 64, "eval_every": 4},
    "cifar-n20k-e16-c50": {"dataset": "imagefolder", "load_size": 32, "image_size": 32, "train_subset": 20000,
                           "epochs": 16, "num_negatives": 64, "eval_every": 4, "clusters_per_class": 50.0},
    "cifar-n20k-e16-w32": {"dataset": "imagefolder", "load_size": 32, "image_size": 32, "train_subset": 20000,
                           "epochs": 16, "num_negatives": 64, "eval_every": 4, "cnn_width": 32},
    "cifar-n50k-e8": {"dataset": "imagefolder", "load_size": 32, "image_size": 32, "train_subset": 0,
                      "epochs": 8, "num_negatives": 160, "eval_every": 4, "min_cluster_size": 20},
}
# The lambda protocol of the paper's section 5.3.1 for the InterCLR arms.
INTER = {"method": "npidv2-interclr", "label_mode": "online", "negative_sampling": "random", "inter_margin": 0.0,
         "intra_margin": 0.0}
ARMS = {"base": {"method": "npidv2"}, "inter": {**INTER, "loss_lambda": 0.75},
        "lambda-1": {**INTER, "loss_lambda": 1.0}}
COMPARISONS = (("inter", "base"), ("inter", "lambda-1"))
METRICS = ("knn_top1", "linear_top1", "svm_map")
HEALTH = ("loss_inter_to_chance", "inter_positives_same_class", "inter_negatives_same_class", "label_purity",
          "label_nmi")


def trial_keys(scale: str, arm: str, seed: int, data_roots: dict) -> dict:
    keys = {**PROFILES["tiny"].settings, **SCALES[scale], **ARMS[arm], "seed": seed}
    if keys.get("dataset") == "imagefolder":
        keys["data_root"] = data_roots["imagefolder"]
    own = TrialConfig.keys_of(keys["method"])
    return {key: value for key, value in keys.items() if key in own}


def settings_text(scale: str) -> str:
    """The scale's departures from the tiny profile, e.g. "train_subset=20000 epochs=16"."""
    return " ".join(f"{key}={value}" for key, value in SCALES[scale].items()) or "the tiny profile"


def config_hash(keys: dict) -> str:
    return TrialConfig.create(**keys).config_hash()


def run_trial(keys: dict, path: Path, version: str) -> None:
    """One trial in a process of its own; its rows land in `path` (JSON) only when it finished."""
    if path.exists():
        return
    arguments = [part for key, value in keys.items() for part in ("--set", f"{key}={value}")]
    partial = path.with_suffix(".partial.json")
    started = time.perf_counter()
    with open(path.with_suffix(".log"), "w") as log:
        done = subprocess.run([sys.executable, "-m", "trainers.fit", *arguments, "--json-out", str(partial)],
                              stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        print(f"failed: {path.stem} (see {path.with_suffix('.log')})", file=sys.stderr, flush=True)
        return
    record = json.loads(partial.read_text())
    record.update(seconds=time.perf_counter() - started, code_version=version)
    files.replace_file(path, json.dumps(record))
    partial.unlink()
    print(f"done: {path.stem} in {record['seconds']:.0f} s", flush=True)


def search_table(folder: Path, plan: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    """One row per (scale, arm, seed) of the plan whose trial finished: its last epoch's metrics and health."""
    rows = []
    for scale, arm, seed, name in plan:
        path = folder / "trials" / f"{name}.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        last = record["rows"][-1]
        rows.append({"scale": scale, "settings": settings_text(scale), "arm": arm, "seed": seed, "config_hash": name,
                     "seconds": record["seconds"], "epochs": last["epoch"],
                     "train_size": last["eval_train_size"], "code_version": record.get("code_version", ""),
                     **{m: last.get(m) for m in METRICS}, **{f"{m}_gain": last.get(f"{m}_gain") for m in METRICS},
                     **{h: last.get(h, math.nan) for h in HEALTH}})
    return pd.DataFrame(rows)


def effects_table(search: pd.DataFrame) -> pd.DataFrame:
    """Per scale, comparison and metric: the paired effect over seeds with its 95% t interval."""
    rows = []
    for scale, trials in search.groupby("scale", sort=False):
        for higher, lower in COMPARISONS:
            for metric in METRICS:
                pairs = trials.pivot(index="seed", columns="arm", values=metric)
                if higher not in pairs or lower not in pairs:
                    continue
                difference = (pairs[higher] - pairs[lower]).dropna()
                n = len(difference)
                mean = float(difference.mean()) if n else math.nan
                sd = float(difference.std(ddof=1)) if n > 1 else math.nan
                half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
                inter = trials[trials["arm"] == higher]
                # The branch's positive can only teach the encoder something when it shares the query's class
                # more often than the lower arm's own nearest neighbours do (its kNN top-1, a share here).
                neighbours = float(trials.loc[trials["arm"] == lower, "knn_top1"].mean()) / 100
                rows.append({"scale": scale, "settings": settings_text(scale), "comparison": f"{higher} - {lower}",
                             "metric": metric, "seeds": n,
                             "effect": mean, "ci_low": mean - half, "ci_high": mean + half, "sd_of_difference": sd,
                             "trained_gain": float(inter[f"{metric}_gain"].mean()),
                             "seconds_per_trial": float(trials["seconds"].mean()),
                             **{h: float(inter[h].mean()) for h in HEALTH},
                             "lower_knn_share": neighbours,
                             "positives_over_neighbours": float(inter["inter_positives_same_class"].mean()) / neighbours})
    return pd.DataFrame(rows)


def write_run_notes(out: Path, argv: list[str], search: pd.DataFrame) -> None:
    import datetime
    import platform

    import torch

    from trainers.trial import device_model

    processor = device_model(torch.device("cpu"))
    lines = ["# Positive control search", "",
             f"- command: `python -m study.measure.positive_control {' '.join(argv)}`",
             f"- code versions of the trials: {', '.join(sorted(search['code_version'].unique()))}",
             f"- written: {datetime.datetime.now().isoformat(timespec='seconds')}; processor: {processor}; "
             f"python {platform.python_version()}, torch {torch.__version__}; one torch thread per trial",
             f"- trials: {search['config_hash'].nunique()} distinct, {len(search)} rows (scale, arm, seed)"]
    files.replace_file(out / "RUN.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m study.measure.positive_control", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for trials/, search.csv and effects.csv")
    parser.add_argument("--scales", nargs="+", default=list(SCALES), choices=list(SCALES), metavar="SCALE",
                        help=f"candidate scales (default: all of {', '.join(SCALES)})")
    parser.add_argument("--arms", nargs="+", default=["base", "inter"], choices=list(ARMS))
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0 .. N-1 per arm (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="trials at a time, one torch thread each")
    parser.add_argument("--cifar-root", default="",
                        help="CIFAR-10 as an ImageFolder tree (train/, test/) for the cifar-* scales")
    args = parser.parse_args(argv)
    if any(SCALES[s].get("dataset") == "imagefolder" for s in args.scales) and not args.cifar_root:
        print("error: the cifar-* scales need --cifar-root DIR (CIFAR-10 as train/<class>/*.jpg, "
              "test/<class>/*.jpg)", file=sys.stderr)
        return 2
    if args.seeds < 1 or args.workers < 1:
        print("error: --seeds and --workers must be >= 1", file=sys.stderr)
        return 2
    version = code_version()
    trials = args.out / "trials"
    trials.mkdir(parents=True, exist_ok=True)
    roots = {"imagefolder": os.path.abspath(args.cifar_root)} if args.cifar_root else {}
    plan = [(scale, arm, seed, trial_keys(scale, arm, seed, roots))
            for seed in range(args.seeds) for scale in args.scales for arm in args.arms]
    named = [(scale, arm, seed, config_hash(keys)) for scale, arm, seed, keys in plan]
    jobs = {name: keys for (*_, name), (*_, keys) in zip(named, plan)}  # each distinct trial once, in plan order
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda job: run_trial(job[1], trials / f"{job[0]}.json", version), jobs.items()))
    search = search_table(args.out, named)
    if search.empty:
        print("error: no trial finished", file=sys.stderr)
        return 1
    files.replace_file(args.out / "search.csv", search.to_csv(index=False))
    effects = effects_table(search)
    files.replace_file(args.out / "effects.csv", effects.to_csv(index=False))
    write_run_notes(args.out, argv if argv is not None else sys.argv[1:], search)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(effects[["scale", "comparison", "metric", "seeds", "effect", "ci_low", "ci_high", "trained_gain",
                       "loss_inter_to_chance", "positives_over_neighbours", "seconds_per_trial"]].round(3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
