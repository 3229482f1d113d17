"""One verdict rule for all of the papers' claims (study.catalogue.CLAIMS, pre-registered comparisons).

Each comparison is a contrast of two factor values of a study from its blocked model (arm + seed,
analysis.stats), or one value against 0, tested in the comparison's form against its margin. Only
finished trials enter: a trial whose last epoch is below its study's is left out and listed.
"""

from __future__ import annotations

import pandas as pd

from analysis import stats
from study.catalogue import CLAIMS, Comparison

VERDICT_RULE = (
    "Per study and metric, value ~ arm + seed is fitted by OLS (seeds are blocks: every arm runs the same "
    "seeds), and each comparison's effect mean(A) - mean(B) gets its 95% interval from the pooled residual "
    "variance; a change within one arm (rise, fall) is a one-sample t interval. Each form has two one-sided "
    "tests at 2.5%: one of the null that the claim is false (support), one of the null that it holds (against). "
    "Superiority A > B: support rejects effect <= 0, against rejects effect >= 0. Non-inferiority A >= B: "
    "support rejects effect <= -margin, against rejects effect >= -margin. Non-superiority (A not better than B): "
    "support rejects effect >= +margin, against rejects effect <= +margin. Equivalence A ~ B (TOST): support "
    "rejects |effect| >= margin, against rejects |effect| <= margin. Within a claim the support p-values, and "
    "separately the against p-values, are Holm-adjusted. A comparison is **reproduced** when its adjusted "
    "support p is below the level, **contradicted** when its adjusted against p is, **inconclusive** otherwise "
    "(so before Holm: reproduced when the 95% interval lies wholly on the claim's side of the margin, "
    "contradicted when wholly on the other). A claim is reproduced when all its comparisons are, contradicted "
    "when any is, inconclusive otherwise.")
REACH_FRACTION = 0.95  # "reach:" metrics: the level is this share of the study's best final mean


def finished(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows of trials that reached their study's last epoch, and the names of those left out.

    The table does not record the planned epochs; the highest epoch any of its trials reached stands in.
    """
    last = table.groupby("config_hash")["epoch"].transform("max")
    done = last == table["epoch"].max()
    stopped = table[~done].groupby(["value", "seed"])["epoch"].max()
    left_out = [f"{value} seed {seed} (epoch {epoch} of {table['epoch'].max()})"
                for (value, seed), epoch in stopped.items()]
    return table[done], left_out


def per_trial(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value per trial (columns value, seed, metric) of a table of finished trials."""
    kind, _, column = metric.rpartition(":")
    first = table["epoch"] == 0
    last = table["epoch"] == table["epoch"].max()
    if kind == "mean":
        values = table[table["epoch"] >= 1].groupby(["value", "seed"])[column].mean()
    elif kind in ("rise", "fall"):
        change = (table[last].set_index(["value", "seed"])[column] - table[first].set_index(["value", "seed"])[column])
        values = change if kind == "rise" else -change
    elif kind == "reach":
        level = REACH_FRACTION * table[last].groupby("value")[column].mean().max()
        trials = table[last].set_index(["value", "seed"]).index
        reached = table[table[column] >= level].groupby(["value", "seed"])["epoch"].min()
        values = reached.reindex(trials).fillna(table["epoch"].max() + 1)
    else:
        values = table[last].set_index(["value", "seed"])[metric]
    return values.rename("metric").reset_index()


def label(comparison: Comparison) -> str:
    """The comparison as the report prints it, e.g. "-0.5 >= 0.25"."""
    lower = 0 if comparison.lower is None else comparison.lower
    return f"{comparison.higher} {stats.SYMBOLS[comparison.form]} {lower}"


def missing() -> dict:
    nan = float("nan")
    return {"verdict": "missing", "effect": nan, "ci_low": nan, "ci_high": nan, "seeds": 0, "residual_sd": nan,
            "p_support": nan, "p_against": nan, "seeds_observed": nan, "seeds_margin": nan}


def contrast_of(table: pd.DataFrame, comparison: Comparison) -> stats.Contrast:
    values = per_trial(table, comparison.metric)
    if comparison.lower is None:
        return stats.one_sample(values.loc[values["value"] == comparison.higher, "metric"].to_numpy(float))
    return stats.blocked_contrast(values, comparison.higher, comparison.lower)


def assess(table: pd.DataFrame | None, comparison: Comparison) -> dict:
    """Effect, interval, raw p-values and seeds for power; 'missing' without the results or the column."""
    if table is None or comparison.metric.rpartition(":")[2] not in table.columns:
        return missing()
    contrast = contrast_of(table, comparison)
    if contrast.seeds == 0:
        return missing()
    low, high = contrast.interval()
    support, against = stats.form_pvalues(contrast, comparison.form, comparison.margin)
    paired = comparison.lower is not None
    planned = stats.planning_effect(comparison.form, comparison.margin)
    return {"verdict": None, "effect": contrast.effect, "ci_low": low, "ci_high": high, "seeds": contrast.seeds,
            "residual_sd": contrast.residual_sd, "p_support": support, "p_against": against,
            "seeds_observed": stats.seeds_to_decide(contrast, comparison.form, comparison.margin, contrast.effect,
                                                    paired),
            "seeds_margin": stats.seeds_to_decide(contrast, comparison.form, comparison.margin, planned, paired)}


def comparison_verdict(p_support: float, p_against: float, alpha: float = stats.ALPHA) -> str:
    if p_support < alpha:
        return "reproduced"
    if p_against < alpha:
        return "contradicted"
    return "inconclusive"


def claim_verdict(verdicts: list[str]) -> str:
    if "missing" in verdicts:
        return "missing"
    if verdicts and all(v == "reproduced" for v in verdicts):
        return "reproduced"
    if "contradicted" in verdicts:
        return "contradicted"
    return "inconclusive"


def evaluate_claims(tables: dict[str, pd.DataFrame], claims=CLAIMS,
                    alphas: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per comparison, with its claim's verdict; studies without results give 'missing'.

    tables hold every trial (unfinished ones are left out here); alphas: a study's one-sided level
    where it is not stats.ALPHA (the sequential boundary of a study whose seeds were added in rounds).
    """
    kept = {name: finished(table)[0] for name, table in tables.items()}
    rows = []
    for claim in claims:
        parts = [{"claim": claim.number, "text": claim.text, "figure": claim.figure, "study": c.study,
                  "comparison": label(c), "form": c.form, "margin": c.margin, "metric": c.metric,
                  **assess(kept.get(c.study), c)} for c in claim.comparisons]
        for key in ("p_support", "p_against"):
            for part, adjusted in zip(parts, stats.holm([p[key] for p in parts])):
                part[key] = adjusted
        for part in parts:
            if part["verdict"] is None:
                alpha = (alphas or {}).get(part["study"], stats.ALPHA)
                part["verdict"] = comparison_verdict(part["p_support"], part["p_against"], alpha)
        overall = claim_verdict([p["verdict"] for p in parts])
        rows += [{**p, "claim_verdict": overall} for p in parts]
    return pd.DataFrame(rows)


def left_out_trials(tables: dict[str, pd.DataFrame]) -> dict[str, list[str]]:
    """Per study, the unfinished trials that no verdict uses."""
    return {name: left for name, table in tables.items() if (left := finished(table)[1])}

