"""Run a study's grid with Ray Tune: `python -m study.run STUDY [--scale tiny] [--seeds N] ...`.

Writes to results/<scale>/<study>/ (or --out): trials.parquet and trials.csv (one row per trial
and evaluated epoch), the figure replica as PNG and PDF, and RUN.md with the exact command, code
version and environment. Ray's own run folders (checkpoints, logs) go to --ray-dir.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from study.profiles import PROFILES
from study.specs import STUDIES, Times, Trial, expand
from trainers import data as datasets
from trainers.config import ConfigError, check_against_data, parse_assignment

RESULT_TABLE = "trials"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m study.run", description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", help=f"one of: {', '.join(STUDIES)}, or all")
    parser.add_argument("--list", action="store_true", help="list the studies with their figure and grid size")
    parser.add_argument("--scale", default="tiny", help=f"one of: {', '.join(PROFILES)} (default tiny)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per factor value (default 3)")
    parser.add_argument("--epochs", type=int, help="override the profile's epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--out", help="output folder (default results/<scale>/<study>)")
    parser.add_argument("--ray-dir", default=".ray_runs", help="Ray's run folders (default .ray_runs, git-ignored)")
    parser.add_argument("--max-concurrent", type=int, default=0, help="trials at once (default: as resources allow)")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial from its checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="print the trials and launch nothing")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace, study: str) -> list[Trial]:
    """A study's trials, with every setting checked; raises ConfigError."""
    if args.scale not in PROFILES:
        raise ConfigError(f"unknown scale {args.scale!r}; choose one of: {', '.join(PROFILES)}")
    overrides = dict(parse_assignment(text) for text in args.set)
    if args.epochs is not None:
        if args.epochs < 0:
            raise ConfigError(f"--epochs {args.epochs}: must be >= 0")
        overrides["epochs"] = args.epochs
    if args.max_concurrent < 0 or args.max_failures < 0:
        raise ConfigError("--max-concurrent and --max-failures must be >= 0")
    return expand(STUDIES[study], PROFILES[args.scale], args.seeds, overrides)


def output_folder(args: argparse.Namespace, study: str, several: bool) -> Path:
    """--out, or --out/<study> when several studies run; by default results/<scale>/<study>."""
    if args.out:
        return Path(args.out) / study if several else Path(args.out)
    return Path("results") / args.scale / study


def studies_named(name: str | None) -> list[str]:
    if name == "all":
        return list(STUDIES)
    if name not in STUDIES:
        raise ConfigError(f"unknown study {name!r}; choose one of: {', '.join(STUDIES)}, or all "
                          f"(python -m study.run --list shows them)")
    return [name]


def print_list(seeds: int) -> None:
    for spec in STUDIES.values():
        values = ", ".join(f"{v.multiple}x" if isinstance(v, Times) else str(v) for v in spec.values)
        print(f"{spec.name:<13} {spec.paper} {spec.figure:<6} {spec.factor} in [{values}]: "
              f"{len(spec.values)} values x {seeds} seeds = {len(spec.values) * seeds} trials; metric {spec.metric}")


def check_data(trials: list[Trial]) -> None:
    """Load the dataset once in the driver, so a missing or too-small dataset fails before launch."""
    config = trials[0].config
    data = datasets.load(config)
    for trial in trials:
        check_against_data(trial.config, len(data.train), data.num_classes)


def code_version() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def print_plan(trials: list[Trial], args: argparse.Namespace) -> None:
    spec = STUDIES[trials[0].study]
    print(f"study {spec.name} ({spec.paper} {spec.figure}): {spec.factor} over {list(spec.levels)}, "
          f"{args.seeds} seed(s), scale {args.scale}: {len(trials)} trials")
    varying = {spec.factor, "seed"}
    print("fixed: " + ", ".join(f"{k}={v}" for k, v in trials[0].config.to_dict().items() if k not in varying))
    for trial in trials:
        print(f"  {spec.factor}={trial.value!s:<10} seed={trial.seed}  config {trial.config.config_hash()}")


def start_ray() -> None:
    # Checkpointing every epoch of short trials is intended; Tune's warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Each trial prints its own per-epoch line: that is the progress output, and Ray must not fold
    # lines of different trials that look alike into "repeated Nx".
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=True)


def run_tune(trials: list[Trial], args: argparse.Namespace, version: str) -> tuple[pd.DataFrame, list[str]]:
    """Run every trial of one study with Ray Tune; returns the metric rows and failed trials' errors."""
    from ray import tune

    from study.trainable import run_trial

    study = trials[0].study
    profile = PROFILES[args.scale]
    params = [{"config": t.config.to_dict(), "metadata": {**t.metadata(), "scale": args.scale,
                                                           "code_version": version}} for t in trials]
    tuner = tune.Tuner(
        tune.with_resources(run_trial, {"cpu": profile.cpus_per_trial, "gpu": profile.gpus_per_trial}),
        param_space={"trial": tune.grid_search(params)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=args.max_concurrent or None,
            reuse_actors=True,  # a finished trial's worker process runs the next: no re-import of torch
            trial_dirname_creator=lambda t: _trial_name(t.config["trial"]["metadata"]),
            trial_name_creator=lambda t: _trial_name(t.config["trial"]["metadata"])),
        run_config=tune.RunConfig(
            name=f"{args.scale}-{study}-{datetime.datetime.now():%Y%m%d-%H%M%S}",
            storage_path=str(Path(args.ray_dir).resolve()),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0))
    grid = tuner.fit()
    frames, errors = [], []
    for result in grid:
        if result.metrics_dataframe is not None:
            frames.append(result.metrics_dataframe)
        if result.error is not None:
            name = _trial_name(result.config["trial"]["metadata"])
            errors.append(f"{name}: {type(result.error).__name__}: {result.error}".splitlines()[0])
    return tidy(frames), errors


def _trial_name(metadata: dict) -> str:
    return f"{metadata['value']}_seed{metadata['seed']}_{metadata['config_hash']}"


def tidy(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per (trial, epoch): Ray's bookkeeping columns dropped, retried epochs kept once."""
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if "config_hash" not in table.columns:
        return pd.DataFrame()
    ray_columns = {"timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
                   "time_this_iter_s", "time_total_s", "pid", "node_ip", "time_since_restore",
                   "iterations_since_restore", "should_checkpoint", "config/trial"}
    table = table[[c for c in table.columns if c not in ray_columns and not c.startswith("config/")]]
    table = table.drop_duplicates(subset=["config_hash", "epoch"], keep="last")
    return table.sort_values(["value", "seed", "epoch"]).reset_index(drop=True)


def write_results(study: str, table: pd.DataFrame, out: Path, args: argparse.Namespace, argv: list[str],
                  version: str, seconds: float, errors: list[str]) -> None:
    import ray
    import torch

    from analysis.figures import plot_study

    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / f"{RESULT_TABLE}.parquet", index=False)
    table.to_csv(out / f"{RESULT_TABLE}.csv", index=False)
    spec = STUDIES[study]
    figure = plot_study(table, spec, out / spec.figure) if not table.empty else None
    command = "python -m study.run " + " ".join(shlex.quote(a) for a in argv)
    lines = [f"# {spec.name} ({spec.paper} {spec.figure}) at scale {args.scale}", "",
             f"- command: `{command}`", f"- code version: {version}",
             f"- finished: {datetime.datetime.now().isoformat(timespec='seconds')} on {socket.gethostname()}",
             f"- wall time: {seconds:.0f} s",
             f"- python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}",
             f"- rows: {len(table)} ({table['config_hash'].nunique() if not table.empty else 0} trials)",
             f"- figure: {figure.name if figure else 'none'}"]
    if errors:
        lines += ["", "## Failed trials", *[f"- {e}" for e in errors]]
    (out / "RUN.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.list:
        print_list(args.seeds)
        return 0
    try:
        names = studies_named(args.study)
        plans = {name: plan(args, name) for name in names}
        if args.dry_run:
            for trials in plans.values():
                print_plan(trials, args)
            return 0
        for trials in plans.values():
            check_data(trials)
        outs = {name: output_folder(args, name, several=len(names) > 1) for name in names}
        for out in outs.values():
            if out.exists() and not out.is_dir():
                raise ConfigError(f"output {out} is a file; give a folder")
    except (ConfigError, datasets.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    version = code_version()
    start_ray()
    failed = False
    for name, trials in plans.items():
        print_plan(trials, args)
        started = time.perf_counter()
        table, errors = run_tune(trials, args, version)
        seconds = time.perf_counter() - started
        write_results(name, table, outs[name], args, argv, version, seconds, errors)
        print(f"wrote {len(table)} rows and the {STUDIES[name].figure} replica to {outs[name]} in {seconds:.0f} s")
        for error in errors:
            print(f"failed trial: {error}", file=sys.stderr)
        failed = failed or bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
