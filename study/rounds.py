"""`python -m study.run STUDY --seeds auto --max-seeds N`: a study's seeds added in rounds
(catalogue.seed_rounds) until analysis.sequential finds every comparison of the study decided
at its alpha-spending boundary, or N seeds have run.

Each round extends the plan by the next seeds into the same run folder: run.json takes the larger
plan, finished trials are not rerun, and the result table holds every seed so far. An interrupted
run continues with the same command plus --resume, from the round that the output folder holds.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path


from catalogue import FIRST_ROUND, seed_rounds
from study import outputs
from trainers.config import ConfigError


def check(seeds, max_seeds: int) -> None:
    """--seeds auto and --max-seeds N go together; raises ConfigError."""
    if seeds == "auto" and max_seeds < FIRST_ROUND:
        raise ConfigError(f"--seeds auto needs --max-seeds N with N >= {FIRST_ROUND} (the first round's seeds)")
    if seeds != "auto" and max_seeds:
        raise ConfigError("--max-seeds N goes with --seeds auto; drop --max-seeds, or give --seeds auto")


def held_round(out: Path, max_seeds: int, plan_seeds, first: list) -> list:
    """The trials of the round the output folder holds (its run.json's plan, else its result table's),
    so that --resume continues that round and a rerun is checked against it; the first round otherwise."""
    manifest = outputs.Manifest.load(out) if out.is_dir() else None
    table = out / f"{outputs.RESULT_TABLE}.parquet"
    if manifest is not None:
        held = set(manifest.config_hashes)
    elif table.exists():
        held = set(outputs.read_table(table, ["config_hash"])["config_hash"])
    else:
        return first
    for seeds in seed_rounds(max_seeds):
        trials = plan_seeds(seeds)
        if {t.config.config_hash() for t in trials} == held:
            return trials
    return first  # not a round of this plan: outputs.check_output refuses it by name


def run_rounds(trials: list, out: Path, manifest: outputs.Manifest, options, plan_seeds, run_study) -> bool:
    """Run rounds from `trials` on; True when the study stopped with every trial finished."""
    name = trials[0].study
    seeds = len({t.seed for t in trials})
    while True:
        if not run_study(trials, out, manifest, replace(options, seeds=seeds, max_seeds=0)):
            return False  # unfinished trials: --resume continues this round
        judged = subprocess.run([sys.executable, "-m", "analysis.sequential", "--study", name, "--folder", str(out),
                                 "--max-seeds", str(options.max_seeds)], capture_output=True, text=True)
        print(judged.stdout, end="")
        if judged.returncode == 0:
            return True
        if judged.returncode != 3:
            print(f"no sequential verdict: {judged.stderr.strip()}", file=sys.stderr)
            return False
        seeds = int(judged.stdout.splitlines()[-1].removeprefix("next: "))
        trials = plan_seeds(seeds)
        manifest.config_hashes = [t.config.config_hash() for t in trials]
        options = replace(options, resume=True)  # later rounds continue the same run folder
        print(f"next round: {seeds} seeds per value")
