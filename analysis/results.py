"""The tidy results table (one row per trial and evaluated epoch) and summaries over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import stdtrit


# What every table study.run writes has, whatever the study.
REQUIRED_COLUMNS = ("value", "seed", "epoch", "config_hash", "knn_top1")


class ResultsError(ValueError):
    """A results table that cannot be used; the message names the problem and the fix."""


def load_trials(folder: str | Path, study: str | None = None) -> pd.DataFrame:
    """A study's results table, from the parquet file `study.run` wrote (the CSV is for people).

    Raises ResultsError for a missing, unreadable, empty or foreign table (another study's, or no
    study's: lacking the columns study.run writes)."""
    path = Path(folder) / "trials.parquet"
    rerun = f"`python -m study.run {study or 'STUDY'} --out {Path(folder)}`"
    if not path.exists():
        raise ResultsError(f"no results table at {path}; run {rerun} first")
    try:
        table = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a damaged or foreign file
        raise ResultsError(f"cannot read {path} ({type(error).__name__}); rerun {rerun}, or move the file "
                           f"away") from None
    lacking = sorted(set(REQUIRED_COLUMNS) - set(table.columns))
    if lacking:
        raise ResultsError(f"{path} has no column {', '.join(lacking)}, so it is not a study.run results table; "
                           f"rerun {rerun}, or move the file away")
    if table.empty:
        raise ResultsError(f"{path} has no rows; rerun {rerun}")
    held = set(table["study"].astype(str)) - {study} if study is not None and "study" in table.columns else set()
    if held:
        raise ResultsError(f"{path} holds results of study {', '.join(sorted(held))}, not {study}; give the "
                           f"folder of {study}'s results")
    check_rows(table, path)
    return table


# The metrics a verdict can read; NaN is legitimate only at epochs that were not evaluated.
METRIC_COLUMNS = ("knn_top1", "svm_map", "linear_top1")


def check_rows(table: pd.DataFrame, path: Path) -> None:
    """Every trial x epoch once, and no metric that is not a number where one was measured: a repeated row
    would narrow every interval, a non-finite one would silently drop a seed. Raises ResultsError naming
    the first offending trial."""
    def trial_of(row) -> str:
        return f"value {row['value']} seed {row['seed']} (config {row['config_hash']}) epoch {row['epoch']}"

    repeated = table.duplicated(["config_hash", "epoch"], keep=False)
    if repeated.any():
        raise ResultsError(f"{path} holds {int(repeated.sum())} rows of trial x epochs that appear more than once, "
                           f"first {trial_of(table[repeated].iloc[0])}; a table must hold each once: rewrite it "
                           f"from the trial states (rerun the study with --resume) or drop the copies")
    for metric in (m for m in METRIC_COLUMNS if m in table.columns):
        values = pd.to_numeric(table[metric], errors="coerce")
        # Epoch 0 and the study's last epoch are always evaluated; elsewhere NaN marks an epoch not evaluated.
        measured = (table["epoch"] == 0) | (table["epoch"] == table["epoch"].max())
        bad = np.isinf(values) | (values.isna() & measured)
        if bad.any():
            raise ResultsError(f"{path}: {metric} is {values[bad].iloc[0]} for {trial_of(table[bad].iloc[0])}, "
                               f"where it was measured; rerun that trial, or remove the study's rows of it")


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper) of a Student-t confidence interval; the bounds are NaN for one value."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stdtrit(len(values) - 1, 0.5 + confidence / 2) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def summarize(table: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Mean, 95% CI bounds and seed count of `metric` for each group of `by`."""
    rows = []
    for key, group in table.groupby(by, sort=False):
        mean, low, high = mean_ci(group[metric])
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "mean": mean, "ci_low": low, "ci_high": high,
                     "seeds": int(group[metric].notna().sum())})
    return pd.DataFrame(rows)


def final_epoch(table: pd.DataFrame) -> pd.DataFrame:
    """Each trial's last evaluated epoch."""
    last = table.groupby("config_hash")["epoch"].transform("max")
    return table[table["epoch"] == last]
