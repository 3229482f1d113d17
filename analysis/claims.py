"""The papers' claims as pre-registered comparisons, and one verdict rule for all of them.

A claim is a list of comparisons "metric(higher) > metric(lower)" between two factor values of a
study (or "metric(higher) > 0" for one value), each evaluated per trial (one number per seed):

    effect = mean(higher) - mean(lower), with a 95% Welch t interval (one-sample t against 0).
    A comparison is reproduced when the interval lies above 0, contradicted when it lies below 0,
    and inconclusive otherwise. A claim is reproduced when all of its comparisons are,
    contradicted when any is, and inconclusive otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.results import mean_ci

VERDICT_RULE = (
    "For each comparison, effect = mean(expected higher) - mean(expected lower) over seeds, with a 95% "
    "Welch t confidence interval. Reproduced: the interval lies above 0. Contradicted: it lies below 0. "
    "Inconclusive: it contains 0 (or fewer than 2 seeds on a side). A claim is reproduced when all its "
    "comparisons are, contradicted when any is, inconclusive otherwise.")


@dataclass(frozen=True)
class Comparison:
    """metric(higher) > metric(lower) across seeds; with lower=None, metric(higher) > 0 (one sample).

    metric is a result column read at each trial's last epoch, or with a prefix: "mean:COLUMN"
    averages it over epochs 1..; "rise:COLUMN" is last minus epoch 0; "fall:COLUMN" epoch 0 minus last.
    """
    study: str
    higher: object
    lower: object | None
    metric: str


@dataclass(frozen=True)
class Claim:
    number: int
    text: str
    figure: str
    comparisons: tuple[Comparison, ...]


CLAIMS = (
    Claim(1, "Online labels end higher than offline labels and get there sooner.", "fig6a",
          (Comparison("labels", "online", "offline", "svm_map"),
           Comparison("labels", "online", "offline", "mean:knn_top1"))),
    Claim(2, "Semi-hard negatives are best; hard negatives are worse than random.", "fig6b",
          (Comparison("sampling", "semi-hard", "hard", "svm_map"),
           Comparison("sampling", "semi-hard", "random", "svm_map"),
           Comparison("sampling", "semi-hard", "semi-easy", "svm_map"),
           Comparison("sampling", "random", "hard", "svm_map"))),
    Claim(3, "For the intra branch a positive margin helps and a negative one hurts.", "fig7a",
          (Comparison("margin-intra", 0.25, 0.0, "linear_top1"),
           Comparison("margin-intra", 0.0, -0.25, "linear_top1"))),
    Claim(4, "For the inter branch a negative margin (best near -0.5) beats zero; positive does not help.", "fig7b",
          (Comparison("margin-inter", -0.5, 0.0, "linear_top1"),
           Comparison("margin-inter", 0.0, 0.25, "linear_top1"))),
    Claim(5, "Combining both branches beats either alone; best lambda near 0.75.", "fig8",
          (Comparison("lambda", 0.75, 1.0, "svm_map"),
           Comparison("lambda", 0.75, 0.0, "svm_map"))),
    Claim(6, "Over-clustering helps, saturating near 10x the class count.", "fig9a",
          (Comparison("clusters", 10.0, 1.0, "svm_map"),
           Comparison("clusters", 10.0, 20.0, "svm_map"))),
    Claim(7, "4x more negatives helps marginally; 16x hurts.", "fig9b",
          (Comparison("negatives", 4, 1, "svm_map"),
           Comparison("negatives", 1, 16, "svm_map"))),
    Claim(11, "Online label maintenance costs less time per epoch than offline (paper Table 4: about 1.3x).",
          "table4", (Comparison("labels", "offline", "online", "mean:epoch_time_s"),)),
    Claim(8, "The over-clustering frequency falls as k grows; with k=1 it rises during training, with k=m/2 "
             "it falls.", "table6",
          (Comparison("overclustering", "rank-1", "rank-5", "overclustering_given_a"),
           Comparison("overclustering", "rank-5", "median", "overclustering_given_a"),
           Comparison("overclustering", "rank-1", None, "rise:overclustering_given_a"),
           Comparison("overclustering", "median", None, "fall:overclustering_given_a"),
           # With 10 classes Omega is near certain in every batch; the per-query share of same-class
           # deputies is the measurement that can still move.
           Comparison("overclustering", "rank-1", "rank-5", "deputy_same_class_rate"),
           Comparison("overclustering", "rank-5", "median", "deputy_same_class_rate"),
           Comparison("overclustering", "rank-1", None, "rise:deputy_same_class_rate"),
           Comparison("overclustering", "median", None, "fall:deputy_same_class_rate"))),
    Claim(9, "Margin C = -100 and -1.2 are better than -0.3.", "table7",
          (Comparison("triplet-margin", -100.0, -0.3, "linear_top1"),
           Comparison("triplet-margin", -1.2, -0.3, "linear_top1"))),
    Claim(10, "rank-m/2 and rank-5 deputies beat rank-1.", "table8",
          (Comparison("rank-k", "median", "rank-1", "linear_top1"),
           Comparison("rank-k", "rank-5", "rank-1", "linear_top1"))),
)


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
    half = float(stats.t.ppf(0.5 + confidence / 2, dof) * se)
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
