"""One verdict rule for all of the papers' claims (catalogue.CLAIMS, pre-registered comparisons).

Each comparison is a contrast of two factor values of a study from its blocked model (arm + seed,
analysis.stats), or one value against 0, tested in the comparison's form against its margin (the
catalogue's margin rule). Before any test, the claim's health gates and the margin rule's resolution
check decide whether the mechanism can show at this scale at all ("not testable at this scale").
Only finished trials enter: a trial whose last epoch is below its study's is left out and listed.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis import stats
from catalogue import (CLAIMS, FIGURE_GAP, MARGIN_RULE, PAPER_GAINS, QUALITY_METRICS, SEED_BUDGET, STUDIES,
                             Comparison, Gate)

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
    "contradicted when wholly on the other). A superiority comparison that is neither is **negligible** when "
    "both one-sided tests of |effect| >= margin reject (TOST; Holm-adjusted as a third family): the effect is "
    "smaller than the smallest effect of interest. Before any test, a comparison is **not testable at this "
    "scale** when a health gate of its claim fails on one of its arms, or when the margin rule finds the "
    "paper's gap, scaled to this scale's trained gain, below what the seed budget resolves. A claim is "
    "contradicted when any comparison is; else not testable when any is; else negligible when any is; else "
    "reproduced when all are; inconclusive otherwise. Margins: " + MARGIN_RULE.format(budget=SEED_BUDGET) + ".")
DECIDED = ("reproduced", "contradicted", "negligible", "not testable")
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
            "p_support": nan, "p_against": nan, "p_negligible": nan, "seeds_observed": nan, "seeds_margin": nan,
            "margin": nan, "trained_gain": nan, "paper_gap": nan, "scaled_gap": nan, "resolvable": nan,
            "health": "", "not_testable": ""}


def contrast_of(table: pd.DataFrame, comparison: Comparison) -> stats.Contrast:
    values = per_trial(table, comparison.metric)
    if comparison.lower is None:
        return stats.one_sample(values.loc[values["value"] == comparison.higher, "metric"].to_numpy(float))
    return stats.blocked_contrast(values, comparison.higher, comparison.lower)


def arms(comparison: Comparison) -> list:
    return [comparison.higher] if comparison.lower is None else [comparison.higher, comparison.lower]


def margin_of(table: pd.DataFrame, comparison: Comparison, residual_sd: float) -> dict:
    """The comparison's margin by the catalogue's rule, and the numbers behind it; a fixed margin as given.

    trained_gain: the compared arms' mean rise of the metric over the epoch-0 floor at this scale;
    scaled_gap: the paper's gap as a share of the paper's trained gain, times trained_gain;
    resolvable: the effect SEED_BUDGET seeds per arm resolve at this study's residual SD."""
    nan = float("nan")
    if comparison.margin is not None or comparison.metric not in QUALITY_METRICS:
        return {"margin": comparison.margin, "trained_gain": nan, "paper_gap": nan, "scaled_gap": nan,
                "resolvable": nan}
    rises = per_trial(table, f"rise:{comparison.metric}")
    gain = float(rises.loc[rises["value"].isin(arms(comparison)), "metric"].mean())
    paper_gap = FIGURE_GAP if comparison.paper_gap is None else comparison.paper_gap
    scaled = paper_gap / PAPER_GAINS[(STUDIES[comparison.study].paper, comparison.metric)] * gain
    resolvable = stats.resolvable_effect(residual_sd, SEED_BUDGET, paired=comparison.lower is not None)
    return {"margin": max(scaled, resolvable), "trained_gain": gain, "paper_gap": paper_gap, "scaled_gap": scaled,
            "resolvable": resolvable}


def gate_values(table: pd.DataFrame, values: list, gate: Gate) -> dict:
    """The gate's column per arm among `values` (seed mean at the last epoch), for the arms that record it."""
    if gate.column not in table.columns:
        return {}
    last = table[table["epoch"] == table["epoch"].max()]
    means = last[last["value"].isin(values)].groupby("value")[gate.column].mean().dropna()
    return means.to_dict()


def health(table: pd.DataFrame, values: list, gates: tuple[Gate, ...], sizes: dict | None = None) -> tuple[str, str]:
    """(every signal in words, the failing ones in words; empty when every measured gate passes), over
    the arms `values`; with `sizes` (margin_of's), the margin rule's resolution check too."""
    shown, failing = [], []
    for gate in gates:
        values_of = gate_values(table, values, gate)
        if not values_of:
            shown.append(f"{gate.column} not measured")
            continue
        worst_arm = (max if gate.at_most else min)(values_of, key=values_of.get)
        worst = values_of[worst_arm]
        text = f"{gate.column} {worst:.3g} ({worst_arm})"
        if gate.bound is not None:
            passes = worst <= gate.bound if gate.at_most else worst >= gate.bound
            text += f" {'<=' if gate.at_most else '>='} {gate.bound:g}: {'passes' if passes else 'FAILS'}"
            if not passes:
                failing.append(f"{gate.column} {worst:.3g} on {worst_arm} ({gate.needs})")
        shown.append(text)
    if sizes is not None and not math.isnan(sizes["scaled_gap"]):
        resolved = sizes["scaled_gap"] >= sizes["resolvable"]
        shown.append(f"trained gain {sizes['trained_gain']:+.2f}; paper gap {sizes['paper_gap']:g} scaled to "
                     f"{sizes['scaled_gap']:.3f} vs {sizes['resolvable']:.3f} resolvable with {SEED_BUDGET} seeds: "
                     f"{'passes' if resolved else 'FAILS'}")
        if not resolved and not sizes["trained_gain"] > 0:
            failing.append(f"the compared arms did not learn (trained gain {sizes['trained_gain']:+.2f})")
        elif not resolved:
            needed = sizes["resolvable"] / sizes["scaled_gap"] * sizes["trained_gain"]
            failing.append(f"the paper's gap scaled to this scale's trained gain ({sizes['scaled_gap']:.3f}) is below "
                           f"the {sizes['resolvable']:.3f} that {SEED_BUDGET} seeds resolve; it needs a trained gain of "
                           f"{needed:.1f} points at this seed SD")
    return "; ".join(shown), "; ".join(failing)


def assess(table: pd.DataFrame | None, comparison: Comparison, gates: tuple[Gate, ...] = ()) -> dict:
    """Effect, interval, margin, health, raw p-values and seeds for power; 'missing' without the results or
    the column."""
    if table is None or comparison.metric.rpartition(":")[2] not in table.columns:
        return missing()
    contrast = contrast_of(table, comparison)
    if contrast.seeds == 0:
        return missing()
    sizes = margin_of(table, comparison, contrast.residual_sd)
    signals, failing = health(table, arms(comparison), gates, sizes)
    margin = sizes["margin"]
    low, high = contrast.interval()
    support, against, negligible = stats.form_pvalues(contrast, comparison.form, margin)
    paired = comparison.lower is not None
    planned = stats.planning_effect(comparison.form, margin)
    return {"verdict": None, "effect": contrast.effect, "ci_low": low, "ci_high": high, "seeds": contrast.seeds,
            "residual_sd": contrast.residual_sd, "p_support": support, "p_against": against,
            "p_negligible": negligible,
            "seeds_observed": stats.seeds_to_decide(contrast, comparison.form, margin, contrast.effect, paired),
            "seeds_margin": stats.seeds_to_decide(contrast, comparison.form, margin, planned, paired),
            **sizes, "health": signals, "not_testable": failing}


def comparison_verdict(p_support: float, p_against: float, alpha: float = stats.ALPHA,
                       p_negligible: float = float("nan"), not_testable: str = "") -> str:
    if not_testable:
        return "not testable"
    if p_support < alpha:
        return "reproduced"
    if p_against < alpha:
        return "contradicted"
    if p_negligible < alpha:
        return "negligible"
    return "inconclusive"


def claim_verdict(verdicts: list[str]) -> str:
    if "missing" in verdicts:
        return "missing"
    for outcome in ("contradicted", "not testable", "negligible"):
        if outcome in verdicts:
            return outcome
    if verdicts and all(v == "reproduced" for v in verdicts):
        return "reproduced"
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
                  "comparison": label(c), "form": c.form, "metric": c.metric,
                  **assess(kept.get(c.study), c, claim.gates)} for c in claim.comparisons]
        for key in ("p_support", "p_against", "p_negligible"):
            for part, adjusted in zip(parts, stats.holm([p[key] for p in parts])):
                part[key] = adjusted
        for part in parts:
            if part["verdict"] is None:
                alpha = (alphas or {}).get(part["study"], stats.ALPHA)
                part["verdict"] = comparison_verdict(part["p_support"], part["p_against"], alpha,
                                                     part["p_negligible"], part["not_testable"])
        overall = claim_verdict([p["verdict"] for p in parts])
        rows += [{**p, "claim_verdict": overall} for p in parts]
    return pd.DataFrame(rows)


def claim_health(tables: dict[str, pd.DataFrame], claim) -> str:
    """The claim's gates over every arm its comparisons name (the worst arm each), in words."""
    if not claim.gates:
        return "no gate: the claim's metric is its own mechanism"
    table = tables.get(claim.comparisons[0].study)
    if table is None:
        return "no results"
    named = [arm for c in claim.comparisons for arm in arms(c)]
    return health(finished(table)[0], named, claim.gates)[0]


def left_out_trials(tables: dict[str, pd.DataFrame]) -> dict[str, list[str]]:
    """Per study, the unfinished trials that no verdict uses."""
    return {name: left for name, table in tables.items() if (left := finished(table)[1])}

