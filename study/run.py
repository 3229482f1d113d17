"""Run a study's grid with Ray Tune: `python -m study.run STUDY [--scale tiny] [--seeds N] ...`.

Writes to runs/<scale>/<study>/ (or --out; the committed results/<scale>/<study> only when named
there): trials.parquet and trials.csv (one row per trial
and evaluated epoch), the figure replica as PNG and PDF, RUN.md with the exact command, code
version and environment, and run.json, which --resume reads. Each trial keeps its state in the
run folder under --storage (study.outputs), so crashed trials retry from their last epoch and an
interrupted study continues with --resume.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import pandas as pd

from catalogue import FIRST_ROUND, STUDIES, SWEEP_FILE, StudySpec, Times, sweep_study
from study import cost, files, outputs, packing, rounds, trackers
from study.safety import lock
from study.cli import OneLineParser
from study.safety.failures import DISK_FULL, TrialFailure, failure_of, next_step, resume_command
from study.options import RunOptions
from study.safety.preflight import check_cluster_gpus, check_launch, check_options, cpus_per_trial, gpus_per_trial
from study.profiles import PROFILES
from study.trials import Trial, expand
from trainers import data as datasets
from trainers.config import ConfigError, parse_assignment


def parse_args(argv: list[str] | None) -> RunOptions:
    parser = OneLineParser(prog="python -m study.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", nargs="?", help=f"one of: {', '.join(STUDIES)}, or all (or --sweep)")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=a,b,...",
                        help="instead of a study: vary this config key over these values (twice: a two-factor "
                             "grid), with the same checks, resume, results, figure and summary")
    parser.add_argument("--metric", default="svm_map", help="a sweep's metric (default svm_map)")
    parser.add_argument("--list", action="store_true", help="list the studies with their figure and grid size")
    parser.add_argument("--scale", default="tiny", help=f"one of: {', '.join(PROFILES)} (default tiny)")
    parser.add_argument("--seeds", type=seed_count, default=3,
                        help="seeds 0..N-1 per factor value (default 3), or auto: add seeds in rounds until the "
                             "study's comparisons are decided, up to --max-seeds")
    parser.add_argument("--max-seeds", type=int, default=0, metavar="N", help="with --seeds auto: at most N seeds")
    parser.add_argument("--epochs", type=int, help="override the profile's epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--out", help="output folder (default runs/<scale>/<study>, beside the committed "
                                      "results/<scale>/<study>, which are written only when named here)")
    parser.add_argument("--storage", default=".ray_runs",
                        help="where run folders (trial states, Tune logs) go; on a cluster, a path every node "
                             "mounts (default .ray_runs, git-ignored)")
    parser.add_argument("--resume", action="store_true", help="continue the unfinished run recorded in the output folder")
    parser.add_argument("--address", help="join this Ray cluster (e.g. auto or HEAD_IP:6379) instead of starting one")
    parser.add_argument("--max-concurrent", type=int, default=0, help="trials at once (default: as resources allow)")
    parser.add_argument("--gpus-per-trial", type=float, metavar="G",
                        help="each trial's share of a GPU (0.25: four trials per GPU; default: the profile's)")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial from its last state")
    parser.add_argument("--checkpoint-every", type=int, default=1, metavar="EPOCHS",
                        help="save each trial's state every this many epochs, and always at the last (default 1)")
    parser.add_argument("--inject-crash", type=int, default=0, metavar="EPOCH",
                        help="for fault tests: every trial kills its own process once, at this epoch")
    parser.add_argument("--dry-run", action="store_true",
                        help="run every launch check, print the output folder, the settings, the trials and the "
                             "estimated cost, and launch nothing")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every trial's per-epoch metrics")
    parser.add_argument("--estimate", action="store_true",
                        help="print what the plan costs in device-hours (study.cost; no data or device needed) "
                             "and launch nothing")
    parser.add_argument("--callback", action="append", default=[], choices=trackers.TRACKERS,
                        help="also log every trial's epochs to this experiment tracker through Tune's own callback "
                             "(pip install -e '.[tracking]'; WANDB_MODE=offline and a file MLFLOW_TRACKING_URI "
                             "keep them local; docs/running.md)")
    parsed = vars(parser.parse_args(argv))
    settings, sweep, named = tuple(parsed.pop("set")), tuple(parsed.pop("sweep")), tuple(parsed.pop("callback"))
    return RunOptions(**parsed, settings=settings, sweep=sweep, callback=named)


def seed_count(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a seed count nor auto") from None


# Caps that keep a typo from planning for ever: 50x the seed budget any verdict here uses, and 50x the
# papers' longest schedule.
MAX_SEEDS = 1000
MAX_EPOCHS = 10000


def plan(options: RunOptions, study: str) -> list[Trial]:
    """A study's trials (with --seeds auto, its first round's), with every setting checked; raises ConfigError."""
    if options.scale not in PROFILES:
        raise ConfigError(f"unknown scale {options.scale!r}; choose one of: {', '.join(PROFILES)}")
    for flag, count in (("--seeds", options.seeds), ("--max-seeds", options.max_seeds)):
        if isinstance(count, int) and count > MAX_SEEDS:
            raise ConfigError(f"{flag} {count} is above the cap of {MAX_SEEDS} seeds per value; give fewer")
    overrides = dict(parse_assignment(text) for text in options.settings)
    if options.epochs is not None:
        if not 0 <= options.epochs <= MAX_EPOCHS:
            raise ConfigError(f"--epochs {options.epochs}: must be in 0..{MAX_EPOCHS}")
        overrides["epochs"] = options.epochs
    if options.max_concurrent < 0 or options.max_failures < 0:
        raise ConfigError("--max-concurrent and --max-failures must be >= 0")
    if options.checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every {options.checkpoint_every}: must be >= 1 (epochs between saves)")
    rounds.check(options.seeds, options.max_seeds)
    trackers.check(options.callback)
    seeds = FIRST_ROUND if options.seeds == "auto" else options.seeds
    packing.check_share(gpus_per_trial(options))
    ranks = packing.ranks_per_trial(gpus_per_trial(options))
    if ranks > 1:
        if overrides.setdefault("data_parallel", ranks) != ranks:
            raise ConfigError(f"--set data_parallel={overrides['data_parallel']} disagrees with --gpus-per-trial "
                              f"{gpus_per_trial(options):g} (one rank per GPU); give one of them")
    trials = expand(spec_for(options, study), PROFILES[options.scale], seeds, overrides)
    epochs = trials[0].config.epochs
    if options.inject_crash and not 1 <= options.inject_crash <= epochs:
        raise ConfigError(f"--inject-crash {options.inject_crash}: must be an epoch in 1..{epochs}")
    return trials


def plan_round(options: RunOptions, study: str, seeds: int) -> list[Trial]:
    """The trials of a --seeds auto round with this many seeds."""
    return plan(replace(options, seeds=seeds, max_seeds=0), study)


def output_folder(options: RunOptions, study: str, several: bool) -> Path:
    """--out, or --out/<study> when several studies run; by default runs/<scale>/<study>, so that a run
    lands beside the committed results and never over them."""
    if options.out:
        return Path(options.out) / study if several else Path(options.out)
    return Path("runs") / options.scale / study


def spec_for(options: RunOptions, name: str) -> StudySpec:
    """The registered study of that name, or the sweep --sweep describes; raises ConfigError."""
    if not options.sweep:
        return STUDIES[name]
    if options.metric not in ("svm_map", "knn_top1", "linear_top1"):
        raise ConfigError(f"--metric {options.metric}: give svm_map, knn_top1 or linear_top1")
    try:
        return sweep_study(list(options.sweep), options.metric)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def studies_named(name: str | None, options: RunOptions) -> list[str]:
    if options.sweep:
        if name is not None:
            raise ConfigError(f"give a study ({name}) or --sweep, not both")
        return [spec_for(options, "").name]
    if name is None:
        raise ConfigError(f"no study given; name one of: {', '.join(STUDIES)}, or all (python -m study.run --list "
                          f"shows them)")
    if name == "all":
        return list(STUDIES)
    if name not in STUDIES:
        raise ConfigError(f"unknown study {name!r}; choose one of: {', '.join(STUDIES)}, or all "
                          f"(python -m study.run --list shows them)")
    return [name]


def print_list(plans: dict[str, list[Trial]], options: RunOptions) -> None:
    for name, trials in plans.items():
        spec = spec_for(options, name)
        values = ", ".join(f"{v.multiple}x" if isinstance(v, Times) else str(v) for v in spec.values)
        seeds = len({t.seed for t in trials})
        print(f"{spec.name:<13} {spec.paper} {spec.figure:<6} {spec.factor} in [{values}]: "
              f"{len(spec.values)} values x {seeds} seeds = {len(trials)} trials; metric {spec.metric}")


def code_version() -> str:
    """git describe of the checkout; a job on a cluster runs from a copy without .git and is told it."""
    if os.environ.get("STUDY_CODE_VERSION"):
        return os.environ["STUDY_CODE_VERSION"]
    try:
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def check_same_code(resumed: dict, version: str) -> None:
    """A resumed run labels every trial with the code version its run.json recorded, so only that code
    may continue it: a folder must never pass as one commit's results while holding another's trials."""
    for name, manifest in resumed.items():
        if manifest is not None and manifest.code_version != version:
            raise ConfigError(f"{name} was started by code {manifest.code_version}, and this checkout is {version}; "
                              f"resume from that version (git worktree add DIR {manifest.code_version.split('-')[0]}), "
                              f"or give --out NEW_DIR to rerun it with this code")


def print_plan(trials: list[Trial], options: RunOptions, out: Path) -> None:
    """What a run would do: the study, where it would write, the settings every trial shares (one per
    line), each trial, and what it would cost (study.cost)."""
    spec = spec_for(options, trials[0].study)
    print(f"study {spec.name} ({spec.paper} {spec.figure}): {spec.factor} over {list(spec.levels)}, "
          f"{options.seeds} seed(s), scale {options.scale}: {len(trials)} trials")
    print(f"output folder: {out}")
    configs = [t.config.to_dict() for t in trials]
    fixed = {k: v for k, v in configs[0].items() if k != "seed" and all(k in c and c[k] == v for c in configs)}
    print("fixed settings:")
    for key, value in fixed.items():
        print(f"  {key} = {value}")
    for trial in trials:
        print(f"  {spec.factor}={trial.value!s:<10} seed={trial.seed}  config {trial.config.config_hash()}")
    print_estimate(trials, options, header=False)


def print_estimate(trials: list[Trial], options: RunOptions, header: bool = True) -> float:
    """Prints the plan's cost (study.cost); returns its device-hours."""
    profile = PROFILES[options.scale]
    if header:
        print(f"study {trials[0].study} at scale {options.scale}: {len(trials)} trials")
    cpus = cpus_per_trial(trials, options)
    lines, hours = cost.describe(trials, profile.costs, cpus, gpus_per_trial(options))
    print("\n".join(lines))
    if profile.costs.device == "CPU" and options.address is None:
        at_once = max(1, int((os.cpu_count() or 1) // cpus))
        print(f"  on this machine's {os.cpu_count()} CPUs ({at_once} trial(s) at a time): about "
              f"{hours * 60 / min(at_once, len(trials)):.0f} min")
    return hours


def start_ray(address: str | None) -> None:
    # Each trial prints its own per-epoch line: that is the progress output, and Ray must not fold
    # lines of different trials that look alike into "repeated Nx".
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not sys.stdout.isatty():  # a log file or a pipe gets no colour codes around Ray's worker prefixes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    # Tune's own reporter would print a configuration box and a TensorBoard path that is not where the
    # trials' files are (docs/running.md says where they are); the study's progress lines replace it.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    address = address or os.environ.get("RAY_ADDRESS")  # set for the driver of a Ray job
    if address:
        ray.init(address=address, configure_logging=False, log_to_driver=True)
    else:  # "local": a fresh instance, never a cluster some other `ray start` left on this machine
        ray.init(address="local", include_dashboard=False, configure_logging=False, log_to_driver=True)


def run_tune(trials: list[Trial], options: RunOptions, run_folder: Path) -> list[TrialFailure]:
    """Run the given trials with Ray Tune; returns the trials that failed every retry."""
    from ray import tune

    from study.progress import StudyProgress
    from study.trainable import run_trial

    saved = outputs.last_epochs(trials, run_folder)  # -1: not started
    epochs_to_go = sum(t.config.epochs - saved[outputs.trial_name(t)] for t in trials)

    params = [{"config": t.config.to_dict(), "metadata": t.metadata(), "name": outputs.trial_name(t),
               "state_dir": str(outputs.trial_state(run_folder, t).path.parent),
               "floor_cache": str(outputs.floor_cache(run_folder)),
               "checkpoint_every": options.checkpoint_every, "crash_at_epoch": options.inject_crash,
               "gpu_share": gpus_per_trial(options), "verbose": options.verbose} for t in trials]
    cpus = cpus_per_trial(trials, options)
    tuner = tune.Tuner(
        tune.with_resources(run_trial, {"cpu": cpus, "gpu": gpus_per_trial(options)}),
        param_space={"trial": tune.grid_search(params)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=options.max_concurrent or None,
            reuse_actors=True,  # a finished trial's worker process runs the next: no re-import of torch
            trial_dirname_creator=lambda t: t.config["trial"]["name"],
            trial_name_creator=lambda t: t.config["trial"]["name"]),
        run_config=tune.RunConfig(
            name=f"tune-{datetime.datetime.now():%Y%m%d-%H%M%S}",
            storage_path=str(run_folder),
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            callbacks=[StudyProgress(len(trials), epochs_to_go),
                       *trackers.callbacks(options, trials[0].study, run_folder)],
            verbose=0))
    return [failure_of(result.config["trial"]["name"], result.error, result.path)
            for result in tuner.fit() if result.error is not None]


def write_results(study: str, trials: list[Trial], table: pd.DataFrame, out: Path, manifest: outputs.Manifest,
                  options: RunOptions, seconds: float, left: list[Trial], failures: list[TrialFailure]) -> list[str]:
    """The result table, each trial's resolved configuration (configs.json), figures and RUN.md; returns the
    figures drawn. Raises OSError (a full disk)."""
    import ray
    import torch

    out.mkdir(parents=True, exist_ok=True)
    spec = spec_for(options, study)
    if options.sweep:  # analysis reads an ad-hoc study's spec from its folder
        files.replace_file(out / SWEEP_FILE, spec.to_json())
    figures = []
    if not table.empty:
        outputs.write_table(table, out)
        figures = draw_figures(study, out)
    # Every key a trial ran with, as trained (margins already mapped to the profile's K), by config hash.
    files.replace_file(out / "configs.json", json.dumps(
        {t.config.config_hash(): {"trial": outputs.trial_name(t), **t.config.to_dict()} for t in trials}, indent=1))
    lines = [f"# {spec.name} ({spec.paper} {spec.figure}) at scale {options.scale}", "",
             f"- command: `{manifest.command}`",
             f"- to rerun it from the repository root: `{rerun_command(manifest.command)}`",
             f"- code version: {manifest.code_version}",
             f"- finished: {datetime.datetime.now().isoformat(timespec='seconds')} on {socket.gethostname()}",
             f"- wall time: {seconds:.0f} s" + (" (this resumed part)" if options.resume else ""),
             f"- python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}",
             f"- rows: {len(table)} ({table['config_hash'].nunique() if not table.empty else 0} finished trials)",
             f"- figures: {', '.join(Path(f).name for f in figures) or 'none'}",
             f"- trial states: {manifest.run_folder}"]
    if left:
        lines += ["", f"## Unfinished trials ({len(left)})", *[f"- {outputs.trial_name(t)}" for t in left]]
    if failures:
        lines += ["", "## Failed trials", *[f"- {failure}" for failure in failures]]
    files.replace_file(out / "RUN.md", "\n".join(lines) + "\n")
    return figures


def rerun_command(command: str) -> str:
    """The command with --out and --storage made relative to the folder it ran in where they lie inside it
    (a reader's checkout has another absolute path), and without --resume."""
    words, kept = shlex.split(command), []
    for i, word in enumerate(words):
        if word == "--resume":
            continue
        if i > 0 and words[i - 1] in ("--out", "--storage") and os.path.isabs(word):
            relative = os.path.relpath(word)
            word = relative if not relative.startswith("..") else word
        kept.append(word)
    return " ".join(shlex.quote(word) for word in kept)


def draw_figures(study: str, out: Path) -> list[str]:
    """The study's figure replicas, drawn by analysis/ in a process of its own: analysis reads results
    and the catalogue, never the runner. Returns the PNG paths written."""
    drawn = subprocess.run([sys.executable, "-m", "analysis.report", "--study", study, "--folder", str(out)],
                           capture_output=True, text=True)
    if drawn.returncode != 0:
        print(f"no figure drawn: {drawn.stderr.strip()}", file=sys.stderr)
        return []
    return drawn.stdout.splitlines()  # one path a line: a folder name may hold spaces


def report_findings(out: Path, committed: Path) -> None:
    """What the run found, printed by analysis/ in a process of its own (it reads results, never the runner):
    per arm the study's metric with its interval, its claims on these rows, and the largest differences
    from the committed results of the same trials, where there are any."""
    command = [sys.executable, "-m", "analysis.compare", "--summary", str(out)]
    if (committed / f"{outputs.RESULT_TABLE}.parquet").exists():
        command += ["--against", str(committed)]
    sys.stdout.flush()
    if subprocess.run(command).returncode != 0:
        print("no summary printed (above: why)", file=sys.stderr)


def run_study(trials: list[Trial], out: Path, manifest: outputs.Manifest, options: RunOptions) -> bool:
    """Run a study's unfinished trials and write its results; True when every trial finished."""
    import ray

    name = trials[0].study
    run_folder = Path(manifest.run_folder)
    print_plan(trials, options, out)
    pending = outputs.unfinished(trials, run_folder)
    if options.resume:
        print(f"resuming {run_folder}: {len(trials) - len(pending)} of {len(trials)} trials already finished")
    try:
        manifest.status = "running"
        manifest.save(out)
    except OSError as error:
        print(f"error: cannot write {out / outputs.MANIFEST} ({error.strerror or error}); free space there, or give "
              f"--out NEW_DIR", file=sys.stderr)
        return False
    started = time.perf_counter()
    try:
        failures = run_tune(pending, options, run_folder) if pending else []
    except Exception:  # Tune could not keep its own records: re-raised unless the run folder's disk is full
        if not outputs.space_shortage(run_folder, pending):
            raise
        failures = []
    seconds = time.perf_counter() - started
    provenance = {"scale": options.scale, "code_version": manifest.code_version, "ray_version": ray.__version__}
    table, left = outputs.collect(trials, run_folder, provenance)
    shortage = outputs.space_shortage(run_folder, left) or any(f.cause.startswith(DISK_FULL) for f in failures)
    for failure in failures:
        if not (shortage and failure.cause.startswith(DISK_FULL)):  # said once, below
            print(f"failed trial {failure}", file=sys.stderr)
    try:
        figures = write_results(name, trials, table, out, manifest, options, seconds, left, failures)
        manifest.status = "unfinished" if left else "finished"
        manifest.save(out)
    except OSError as error:  # a full or vanished disk: the trial states keep every finished epoch
        print(f"error: cannot write the results to {out} ({error.strerror or error}; about "
              f"{outputs.table_bytes(table) / 2 ** 20:.1f} MB needed); free space there, then "
              f"{resume_command(manifest.command)}",
              file=sys.stderr)
        return False
    drawn = f" and {', '.join(Path(f).name for f in figures)}" if figures else ""
    print(f"wrote {len(table)} rows{drawn} to {out} in {seconds:.0f} s")
    if not table.empty:
        report_findings(out, Path("results") / options.scale / name)
    if shortage:
        needed = outputs.space_needed(run_folder, left)
        amounts = (f": its {len(left)} unfinished trials need about {needed / 2 ** 20:.1f} MB, "
                   f"{outputs.free_space(run_folder) / 2 ** 20:.1f} MB are free") if needed else ""
        print(f"error: no space left in {run_folder}{amounts}; free space there, then "
              f"{resume_command(manifest.command)}", file=sys.stderr)
    elif left:
        print(f"{len(left)} of {len(trials)} trials unfinished; {next_step(failures, manifest.command)}",
              file=sys.stderr)
    failed = {failure.trial for failure in failures}
    if any(outputs.trial_name(t) not in failed for t in left):  # Ctrl-C, or a full disk: not a trial's own error
        raise StudyStopped(name)
    return not left


class StudyStopped(Exception):
    """The driver stopped a study before its trials ended (an interrupt, or no space left); with several
    studies, the later ones are not started."""


def refuse(error: Exception, locks: list[lock.OutputLock]) -> int:
    """Bad input: one line, exit 2, and the output folders left as they were."""
    for held in locks:
        held.release(refused=True)
    print(f"error: {error}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        options = parse_args(argv)
    except SystemExit as stop:  # --help, or a parse error already printed in one line
        return stop.code
    locks: list[lock.OutputLock] = []
    try:  # every way out releases the locks taken, a refusal or an unexpected error as much as the end
        try:
            check_options(options)
            if options.list:
                print_list({name: plan(options, name) for name in STUDIES}, options)
                return 0
            names = studies_named(options.study, options)
            plans = {name: plan(options, name) for name in names}
            if options.seeds == "auto":
                plans = {name: rounds.held_round(output_folder(options, name, several=len(names) > 1),
                                                 options.max_seeds, partial(plan_round, options, name), trials)
                         for name, trials in plans.items()}
            outs = {name: output_folder(options, name, several=len(names) > 1) for name in names}
            if options.dry_run:  # every launch check, nothing written or launched
                check_launch(options, plans, outs)
                for name, trials in plans.items():
                    print_plan(trials, options, outs[name])
                return 0
            if options.estimate:
                total = sum(print_estimate(trials, options) for trials in plans.values())
                if len(plans) > 1:
                    print(f"all {len(plans)} studies: {cost.duration(total, PROFILES[options.scale].costs.device)}")
                return 0
            for name in names:  # before anything is checked or written: a second driver stops here
                locks.append(lock.acquire(outs[name]))
            resumed = check_launch(options, plans, outs)
            version = code_version()
            check_same_code(resumed, version)
        except (ConfigError, datasets.DataError) as error:
            return refuse(error, locks)
        for held in locks:
            if held.previous:
                print(f"took over the lock of {held.out} left by a run that has ended ({lock.describe(held.previous)})")
        command = "python -m study.run " + " ".join(shlex.quote(a) for a in argv)
        start_ray(options.address)
        if options.address is not None:
            try:
                for trials in plans.values():
                    check_cluster_gpus(trials, options)
            except ConfigError as error:
                return refuse(error, locks)
        finished = True
        for position, (name, trials) in enumerate(plans.items()):
            manifest = resumed[name] or outputs.Manifest(
                study=name, scale=options.scale,
                run_folder=str(outputs.new_run_folder(options.storage, options.scale, name)),
                config_hashes=[t.config.config_hash() for t in trials], status="running", command=command,
                code_version=version)
            try:
                if options.seeds == "auto":
                    finished = rounds.run_rounds(trials, outs[name], manifest, options,
                                                 partial(plan_round, options, name), run_study) and finished
                else:
                    finished = run_study(trials, outs[name], manifest, options) and finished
            except StudyStopped:
                later = list(plans)[position + 1:]
                if later:
                    print(f"stopped during {name}; not started: {', '.join(later)}; {resume_command(command)}",
                          file=sys.stderr)
                return 1
        return 0 if finished else 1
    finally:
        for held in locks:
            held.release()

if __name__ == "__main__":
    sys.exit(main())
