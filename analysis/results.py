"""The tidy results table (one row per trial and evaluated epoch) and summaries over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import stdtrit


def load_trials(folder: str | Path) -> pd.DataFrame:
    """A study's results table, from the parquet file `study.run` wrote (the CSV is for people)."""
    path = Path(folder) / "trials.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no results table at {path}; run `python -m study.run STUDY` first")
    return pd.read_parquet(path)


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
