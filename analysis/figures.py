"""Figure replicas: the paper's metric per factor value (mean and 95% CI over seeds) beside the
epoch-0 floor of the randomly initialised network, and the kNN curve over epochs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from analysis.results import final_epoch, summarize
from study.files import save_figure

# seaborn's "colorblind" palette, spelled out so that drawing needs matplotlib only.
COLORBLIND = ("#0173B2", "#DE8F05", "#029E73", "#D55E00", "#CC78BC", "#CA9161", "#FBAFE4", "#949494", "#ECE133",
              "#56B4E9")
METRIC_LABELS = {"svm_map": "SVM mAP (%)", "knn_top1": "kNN top-1 (%)"}


def plot_study(table: pd.DataFrame, spec, stem: Path) -> Path:
    """Draw a study's replica to stem.png and stem.pdf; returns the PNG path."""
    return save(draw_study(table, spec), stem)


def plot_label_quality(table: pd.DataFrame, stem: Path) -> Path:
    return save(draw_label_quality(table), stem)


def plot_overclustering(table: pd.DataFrame, stem: Path) -> Path:
    return save(draw_overclustering(table), stem)


def epoch_axis(axis, label: str = "epoch") -> None:
    """An x axis of epochs, ticked at whole epochs only."""
    axis.set_xlabel(label)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def save(figure, stem: Path) -> Path:
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, stem.with_suffix(".png"), dpi=130)
    save_figure(figure, stem.with_suffix(".pdf"), metadata={"CreationDate": None})  # the same results, the same bytes
    plt.close(figure)
    return stem.with_suffix(".png")


def draw_study(table: pd.DataFrame, spec):
    """The replica as a matplotlib figure: final metric per factor value (mean, 95% CI over seeds) with
    the epoch-0 floor, and kNN top-1 over epochs."""
    order = [v for v in spec.levels if v in set(table["value"])]
    palette = dict(zip(order, COLORBLIND))
    figure, (bars, curves) = plt.subplots(1, 2, figsize=(11, 4.2))

    final = summarize(final_epoch(table), spec.metric, ["value"]).set_index("value").loc[order]
    floor = summarize(table[table["epoch"] == 0], spec.metric, ["value"]).set_index("value").loc[order]
    half_width = (final["ci_high"] - final["mean"]).fillna(0.0)  # no interval from a single seed
    positions = range(len(order))
    bars.bar(positions, final["mean"], color=[palette[v] for v in order], yerr=half_width, capsize=5)
    bars.scatter(positions, floor["mean"], marker="_", s=900, color="black", zorder=3, label="epoch-0 floor")
    low = min((final["mean"] - half_width).min(), floor["mean"].min())
    high = (final["mean"] + half_width).max()
    margin = max(1.0, 0.15 * (high - low))
    bars.set_ylim(low - margin, high + margin)
    labels = [str(v) for v in order]
    slanted = sum(map(len, labels)) > 40  # long names (Table 1's methods) would overlap level
    bars.set_xticks(list(positions), labels, rotation=20 if slanted else 0, ha="right" if slanted else "center")
    bars.set_xlabel(spec.factor)
    bars.set_ylabel(f"final {METRIC_LABELS.get(spec.metric, spec.metric)}")
    bars.legend(loc="lower right")
    bars.set_title(f"{spec.paper} {spec.figure} replica: {spec.name}")

    # Epochs that `eval_every` skipped carry NaN kNN; the curve joins the evaluated ones.
    curve = summarize(table.dropna(subset=["knn_top1"]), "knn_top1", ["value", "epoch"])
    for value in order:
        part = curve[curve["value"] == value].sort_values("epoch")
        curves.plot(part["epoch"], part["mean"], marker="o", ms=3, color=palette[value], label=str(value))
        curves.fill_between(part["epoch"], part["ci_low"], part["ci_high"], color=palette[value], alpha=0.2)
    epoch_axis(curves, "epoch (0 = random network)")
    curves.set_ylabel(METRIC_LABELS["knn_top1"])
    curves.legend(title=spec.factor)
    seeds = int(final["seeds"].min())
    curves.set_title(f"mean and 95% CI over {seeds} seed(s)")
    figure.tight_layout()
    return figure


LABEL_QUALITY = {"label_nmi": "NMI with true classes", "label_purity": "purity",
                 "labels_changed": "fraction of labels changed", "cluster_size_cv": "cluster size CV (std/mean)"}
OVERCLUSTERING = {"overclustering_given_a": "Pr(Omega | A)", "overclustering_given_b": "Pr(Omega | B)",
                  "deputy_same_class_rate": "share of queries whose deputy\nhas their class"}


def draw_label_quality(table: pd.DataFrame):
    """Pseudo-label evidence per epoch for online vs offline labels: NMI and purity against the true
    classes, the fraction of labels that changed (from epoch 1), and the spread of cluster sizes."""
    return draw_curves(table, LABEL_QUALITY, "labels", from_epoch_1={"labels_changed"})


def draw_overclustering(table: pd.DataFrame):
    """The over-clustering measurements of every epoch (Table 6 shows the first and last) per deputy."""
    return draw_curves(table, {k: v for k, v in OVERCLUSTERING.items() if k in table.columns}, "deputy")


def draw_curves(table: pd.DataFrame, columns: dict[str, str], legend: str, from_epoch_1: frozenset = frozenset()):
    """One panel per column: its mean and 95% CI over seeds against the epoch, a line per factor value."""
    figure, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.6), squeeze=False)
    palette = dict(zip(dict.fromkeys(table["value"]), COLORBLIND))
    for axis, (column, label) in zip(axes[0], columns.items()):
        summary = summarize(table[table["epoch"] >= (1 if column in from_epoch_1 else 0)], column, ["value", "epoch"])
        for value, part in summary.groupby("value", sort=False):
            part = part.sort_values("epoch")
            axis.plot(part["epoch"], part["mean"], marker="o", ms=3, color=palette[value], label=str(value))
            axis.fill_between(part["epoch"], part["ci_low"], part["ci_high"], color=palette[value], alpha=0.2)
        epoch_axis(axis)
        axis.set_title(label)
    axes[0][0].legend(title=legend)
    figure.tight_layout()
    return figure


VERDICT_COLOURS = {"reproduced": COLORBLIND[2], "contradicted": COLORBLIND[3], "negligible": COLORBLIND[0],
                   "not testable": COLORBLIND[4], "inconclusive": COLORBLIND[7], "missing": COLORBLIND[8]}


def plot_forest(claims: pd.DataFrame, stem: Path) -> Path:
    return save(draw_forest(claims), stem)


def draw_forest(claims: pd.DataFrame):
    """Every comparison's effect and 95% interval in units of its smallest effect of interest (so the
    margin band is [-1, 1] for all), one row per comparison grouped by claim, coloured by verdict."""
    rows = claims.iloc[::-1].reset_index(drop=True)  # the first claim on top
    figure, axis = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.4))
    axis.axvspan(-1, 1, color="0.92", zorder=0, label="within the smallest effect of interest")
    axis.axvline(0, color="black", lw=0.8)
    scaled = rows[["effect", "ci_low", "ci_high"]].div(rows["margin"], axis=0)
    for verdict, colour in VERDICT_COLOURS.items():
        part = rows.index[rows["verdict"] == verdict]
        if len(part):
            axis.errorbar(scaled.loc[part, "effect"], part,
                          xerr=np.abs(scaled.loc[part, ["ci_low", "ci_high"]].to_numpy().T
                                      - scaled.loc[part, "effect"].to_numpy()),
                          fmt="o", ms=4, capsize=2, color=colour, label=verdict)
    labels = [f"{r.claim}. {r.study}: {r.comparison}  ({r.metric})" for r in rows.itertuples()]
    axis.set_yticks(range(len(rows)), labels, fontsize=7)
    for position in np.flatnonzero(rows["claim"].to_numpy()[1:] != rows["claim"].to_numpy()[:-1]):
        axis.axhline(position + 0.5, color="0.7", lw=0.5)
    axis.set_ylim(-0.7, len(rows) - 0.3)
    axis.set_xlabel("effect / smallest effect of interest (95% interval; one-sample rows against 0)")
    axis.legend(loc="lower right", fontsize=7)
    axis.set_title("Every registered comparison")
    figure.tight_layout()
    return figure
