"""One verdict rule for all of the papers' claims (study.catalogue.CLAIMS, pre-registered comparisons).

A claim is a list of comparisons "metric(higher) > metric(lower)" between two factor values of a
study (or "metric(higher) > 0" for one value), each evaluated per trial (one number per seed):

    effect = mean(higher) - mean(lower), with a 95% Welch t interval (one-sample t against 0).
    A comparison is reproduced when the interval lies above 0, contradicted when it lies below 0,
    and inconclusive otherwise. A claim is reproduced when all of its comparisons are,
    contradicted when any is, and inconclusive otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import stdtrit  # the t quantile; scipy.stats trips over a blocked torch

from analysis.results import mean_ci
from study.catalogue import CLAIMS, Comparison

VERDICT_RULE = (
    "For each comparison, effect = mean(expected higher) - mean(expected lower) over seeds, with a 95% "
    "Welch t confidence interval. Reproduced: the interval lies above 0. Contradicted: it lies below 0. "
    "Inconclusive: it contains 0 (or fewer than 2 seeds on a side). A claim is reproduced when all its "
    "comparisons are, contradicted when any is, inconclusive otherwise.")


def per_trial(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value per trial: the final epoch's `metric`, or with "mean:" its mean over epochs 1.."""
    kind, _, column = metric.rpartition(":")
    first = table["epoch"] == 0
    last = table["epoch"] == table.groupby("config_hash")["epoch"].transform("max")
    if kind == "mean":
        values = table[table["epoch"] >= 1].groupby(["value", "seed"])[column].mean()
    elif kind in ("rise", "fall"):
        change = (table[last].set_index(["value", "seed"])[column] - table[first].set_index(["value", "seed"])[column])
        values = change if kind == "rise" else -change
    else:
        values = table[last].set_index(["value", "seed"])[metric]
    return values.rename("metric").reset_index()


def welch_interval(higher: np.ndarray, lower: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(effect, low, high): mean difference and its Welch t interval (NaN bounds under 2 per side)."""
    effect = float(np.mean(higher) - np.mean(lower))
    if len(higher) < 2 or len(lower) < 2:
        return effect, float("nan"), float("nan")
    var_h, var_l = np.var(higher, ddof=1) / len(higher), np.var(lower, ddof=1) / len(lower)
    se = float(np.sqrt(var_h + var_l))
    if se == 0:
        return effect, effect, effect
    dof = (var_h + var_l) ** 2 / (var_h ** 2 / (len(higher) - 1) + var_l ** 2 / (len(lower) - 1))
    half = float(stdtrit(dof, 0.5 + confidence / 2) * se)
    return effect, effect - half, effect + half


def comparison_verdict(low: float, high: float) -> str:
    if np.isnan(low) or np.isnan(high):
        return "inconclusive"
    if low > 0:
        return "reproduced"
    if high < 0:
        return "contradicted"
    return "inconclusive"


def claim_verdict(verdicts: list[str]) -> str:
    if verdicts and all(v == "reproduced" for v in verdicts):
        return "reproduced"
    if "contradicted" in verdicts:
        return "contradicted"
    return "inconclusive"


def missing(seeds: tuple[int, int] = (0, 0)) -> dict:
    nan = float("nan")
    return {"verdict": "missing", "effect": nan, "ci_low": nan, "ci_high": nan, "seeds": seeds}


def evaluate_comparison(table: pd.DataFrame | None, comparison: Comparison) -> dict:
    """The comparison's verdict; 'missing' without the study's results or the metric's column."""
    if table is None or comparison.metric.rpartition(":")[2] not in table.columns:
        return missing()
    values = per_trial(table, comparison.metric)
    higher = values.loc[values["value"] == comparison.higher, "metric"].dropna().to_numpy(float)
    if comparison.lower is None:
        if len(higher) == 0:
            return missing()
        effect, low, high = mean_ci(higher)
        return {"verdict": comparison_verdict(low, high), "effect": effect, "ci_low": low, "ci_high": high,
                "seeds": (len(higher), 0)}
    lower = values.loc[values["value"] == comparison.lower, "metric"].dropna().to_numpy(float)
    if len(higher) == 0 or len(lower) == 0:
        return missing((len(higher), len(lower)))
    effect, low, high = welch_interval(higher, lower)
    return {"verdict": comparison_verdict(low, high), "effect": effect, "ci_low": low, "ci_high": high,
            "seeds": (len(higher), len(lower))}


def evaluate_claims(tables: dict[str, pd.DataFrame], claims=CLAIMS) -> pd.DataFrame:
    """One row per comparison, with its claim's verdict; studies without results give 'missing'."""
    rows = []
    for claim in claims:
        parts = []
        for comparison in claim.comparisons:
            result = evaluate_comparison(tables.get(comparison.study), comparison)
            parts.append({"claim": claim.number, "text": claim.text, "figure": claim.figure,
                          "study": comparison.study,
                          "comparison": f"{comparison.higher} > {0 if comparison.lower is None else comparison.lower}",
                          "metric": comparison.metric, **result})
        verdicts = [p["verdict"] for p in parts]
        overall = "missing" if "missing" in verdicts else claim_verdict(verdicts)
        rows += [{**p, "claim_verdict": overall} for p in parts]
    return pd.DataFrame(rows)
