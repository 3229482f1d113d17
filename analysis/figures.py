"""Figure replicas, drawn as the verdicts test them: every seed's final value with the mean and its 95%
interval beside the epoch-0 floor of the randomly initialised network; each registered comparison as the
paired, seed-blocked effect the verdict reads, with its interval, its boundary, the margin band and the
paper's gap scaled to this scale; and the kNN curve over epochs. One colour per arm in every figure of a
study. Drawn with seaborn on matplotlib."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from analysis.results import final_epoch, summarize
from catalogue import INTER_LEARNS, NEGATIVES_OTHER_CLASS
from study.files import save_figure

COLORBLIND = tuple(sns.color_palette("colorblind").as_hex())
METRIC_LABELS = {"svm_map": "SVM mAP (%)", "knn_top1": "kNN top-1 (%)", "linear_top1": "linear top-1 (%)",
                 "deputy_same_class_rate": "share of deputies of the query's class", "epoch_time_s": "epoch time (s)"}
FACTOR_LABELS = {"label_mode": "pseudo-label maintenance", "negative_sampling": "inter negatives",
                 "intra_margin": "intra margin m", "inter_margin": "inter margin m'", "loss_lambda": "loss weight lambda",
                 "clusters_per_class": "clusters per class", "num_negatives": "negatives (x the profile's K)",
                 "method": "method", "deputy": "deputy negative", "triplet_margin": "margin C"}
VERDICT_COLOURS = {"reproduced": COLORBLIND[2], "contradicted": COLORBLIND[3], "negligible": COLORBLIND[0],
                   "not testable": COLORBLIND[4], "inconclusive": COLORBLIND[7], "missing": COLORBLIND[8]}
# Effects are drawn in units of their margin; beyond this they are clipped, with the value written out.
EFFECT_AXIS_LIMIT = 4.0


def plot_study(table: pd.DataFrame, spec, stem: Path, comparisons: pd.DataFrame | None = None) -> Path:
    """Draw a study's replica to stem.png and stem.pdf; returns the PNG path. `comparisons`: the study's
    rows of analysis.claims.evaluate_claims, for the paired-effect panel."""
    return save(draw_study(table, spec, comparisons), stem)


def plot_label_quality(table: pd.DataFrame, spec, stem: Path) -> Path:
    return save(draw_label_quality(table, spec), stem)


def plot_overclustering(table: pd.DataFrame, spec, stem: Path) -> Path:
    return save(draw_overclustering(table, spec), stem)


def plot_health(table: pd.DataFrame, spec, stem: Path) -> Path | None:
    """The mechanism's health signals per epoch and arm (study.run records them), or None if the table has
    none of them (rows from before they were recorded)."""
    columns = {k: v for k, v in HEALTH.items() if k in table.columns and table[k].notna().any()}
    if not columns:
        return None
    figure = draw_curves(table, spec, columns, from_epoch_1=frozenset(columns))
    for axis, column in zip(figure.axes, columns):
        for gate in (g for g in (INTER_LEARNS, NEGATIVES_OTHER_CLASS) if g.column == column):
            line = axis.axhline(gate.bound, color="0.3", linestyle="--", linewidth=1,
                                label=f"health gate: at most {gate.bound:g}")
            axis.legend(handles=[line], fontsize=7, loc="best")
    return save(figure, stem)


def plot_forest(claims: pd.DataFrame, stem: Path) -> Path:
    return save(draw_forest(claims), stem)


def save(figure, stem: Path) -> Path:
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, stem.with_suffix(".png"), dpi=130)
    save_figure(figure, stem.with_suffix(".pdf"), metadata={"CreationDate": None})  # the same results, the same bytes
    plt.close(figure)
    return stem.with_suffix(".png")


def epoch_axis(axis, label: str = "epoch") -> None:
    """An x axis of epochs, ticked at whole epochs only."""
    axis.set_xlabel(label)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def arm_palette(spec) -> dict:
    """One colour per value of the study's factor, in the catalogue's order: the same in every figure."""
    return dict(zip(spec.levels, COLORBLIND * (1 + len(spec.levels) // len(COLORBLIND))))


def arm_order(table: pd.DataFrame, spec) -> list:
    return [value for value in spec.levels if value in set(table["value"])]


def factor_label(spec) -> str:
    return FACTOR_LABELS.get(spec.factor, spec.factor.replace("_", " "))


def metric_words(metric: str) -> str:
    """A comparison's metric ("svm_map", "reach:knn_top1", ...) in words, with units."""
    prefix, _, column = metric.rpartition(":")
    words = METRIC_LABELS.get(column, column.replace("_", " "))
    return {"": words, "mean": f"mean {words} over epochs", "reach": f"epochs to 95% of the best {words}",
            "rise": f"rise of {words}", "fall": f"fall of {words}"}.get(prefix, metric)


def draw_study(table: pd.DataFrame, spec, comparisons: pd.DataFrame | None = None):
    """The replica: per-seed final values with mean and 95% interval against the floor; with `comparisons`,
    the paired effects the verdicts test; and kNN top-1 over epochs (always the last axis)."""
    with_effects = comparisons is not None and len(comparisons) > 0
    widths = [1.1, 1.4, 1.0] if with_effects else [1.1, 1.0]
    figure, axes = plt.subplots(1, len(widths), figsize=(5.2 * len(widths), 4.8),
                                gridspec_kw={"width_ratios": widths})
    order, palette = arm_order(table, spec), arm_palette(spec)
    draw_seeds(axes[0], table, spec, order, palette)
    if with_effects:
        rows = comparisons.reset_index(drop=True)
        draw_effect_rows(axes[1], rows, [f"{r.comparison}\n{metric_words(r.metric)}" for r in rows.itertuples()])
        axes[1].set_title("paired effects (seed-blocked), as the verdicts test them", fontsize=9)
    draw_knn_curves(axes[-1], table, spec, order, palette)
    title = (f"sweep over {factor_label(spec)}" if spec.paper == "sweep" else
             f"{spec.paper} {spec.figure} replica: {spec.name}")
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def draw_seeds(axis, table: pd.DataFrame, spec, order: list, palette: dict) -> None:
    """Every seed's final value (points), the mean with its 95% interval (black), the epoch-0 floor (grey)."""
    final = final_epoch(table)
    final = final[final["value"].isin(order)].assign(arm=lambda frame: frame["value"].map(str))
    labels = [str(value) for value in order]
    # A swarm places the points deterministically (a random jitter would redraw the same results differently).
    sns.swarmplot(data=final, x="arm", y=spec.metric, order=labels, hue="arm", hue_order=labels,
                  palette=[palette[value] for value in order], size=5, alpha=0.8, legend=False, ax=axis)
    summary = summarize(final, spec.metric, ["value"]).set_index("value").loc[order]
    half_width = (summary["ci_high"] - summary["mean"]).fillna(0.0)  # no interval from a single seed
    positions = np.arange(len(order))
    axis.errorbar(positions + 0.3, summary["mean"], yerr=half_width, fmt="D", ms=5, color="black", capsize=4,
                  label="mean, 95% interval")
    floor = summarize(table[table["epoch"] == 0], spec.metric, ["value"]).set_index("value").reindex(order)
    axis.scatter(positions, floor["mean"], marker="_", s=500, color="0.55", zorder=1, label="epoch-0 floor")
    slanted = sum(map(len, labels)) > 40  # long names (Table 1's methods) would overlap level
    axis.set_xticks(positions, labels, rotation=20 if slanted else 0, ha="right" if slanted else "center")
    axis.set_xlabel(factor_label(spec))
    axis.set_ylabel(f"final {METRIC_LABELS.get(spec.metric, spec.metric)}")
    axis.set_title(f"each seed ({int(summary['seeds'].min())} per arm), mean and 95% interval", fontsize=9)
    axis.legend(loc="best", fontsize=7)


def draw_knn_curves(axis, table: pd.DataFrame, spec, order: list, palette: dict) -> None:
    # Epochs that `eval_every` skipped carry NaN kNN; the curve joins the evaluated ones.
    curve = summarize(table.dropna(subset=["knn_top1"]), "knn_top1", ["value", "epoch"])
    for value in order:
        part = curve[curve["value"] == value].sort_values("epoch")
        axis.plot(part["epoch"], part["mean"], marker="o", ms=3, color=palette[value], label=str(value))
        axis.fill_between(part["epoch"], part["ci_low"], part["ci_high"], color=palette[value], alpha=0.2)
    epoch_axis(axis, "epoch (0 = random network)")
    axis.set_ylabel(METRIC_LABELS["knn_top1"])
    axis.legend(title=factor_label(spec), fontsize=7)
    axis.set_title("kNN top-1 over epochs (mean, 95% interval)", fontsize=9)


def boundaries(form: str) -> tuple[float, ...]:
    """Where a comparison's verdict flips, in units of its margin."""
    return {"superiority": (0.0,), "non-inferiority": (-1.0,), "non-superiority": (1.0,),
            "equivalence": (-1.0, 1.0)}.get(form, (0.0,))


def draw_effect_rows(axis, rows: pd.DataFrame, labels: list[str]) -> None:
    """One row per comparison, top to bottom: its effect and 95% interval in units of its margin (the band
    [-1, 1]), a tick at its boundary, a diamond at the paper's gap scaled to this scale, coloured by verdict;
    the effect in the metric's own units is written at the right. Intervals beyond the axis are clipped,
    with an arrow."""
    limit = EFFECT_AXIS_LIMIT
    y = np.arange(len(rows))[::-1]  # the first row on top
    scaled = rows[["effect", "ci_low", "ci_high"]].div(rows["margin"], axis=0)
    axis.axvspan(-1, 1, color="0.93", zorder=0)
    axis.axvline(0, color="black", lw=0.6)
    for i, row in rows.iterrows():
        colour = VERDICT_COLOURS.get(row["verdict"], "black")
        low, high, effect = (float(np.clip(scaled.at[i, key], -limit, limit)) for key in ("ci_low", "ci_high", "effect"))
        axis.plot([low, high], [y[i], y[i]], color=colour, lw=2, solid_capstyle="butt")
        axis.plot(effect, y[i], "o", color=colour, ms=5)
        for end, clipped in ((low, scaled.at[i, "ci_low"] < -limit), (high, scaled.at[i, "ci_high"] > limit)):
            if clipped:
                axis.annotate("", xy=(end, y[i]), xytext=(end * 0.9, y[i]),
                              arrowprops={"arrowstyle": "->", "color": colour})
        for boundary in boundaries(row["form"]):
            axis.plot([boundary, boundary], [y[i] - 0.3, y[i] + 0.3], color="black", lw=1.2)
        paper = row.get("scaled_gap")
        if paper is not None and not pd.isna(paper) and row["margin"]:
            axis.plot(float(np.clip(paper / row["margin"], -limit, limit)), y[i], "D", mfc="none", color="0.3", ms=6)
        axis.text(limit * 1.04, y[i], f"{row['effect']:+.3g} [{row['ci_low']:+.3g}, {row['ci_high']:+.3g}]",
                  va="center", fontsize=6.5)
    axis.set_yticks(y, labels, fontsize=7)
    axis.set_xlim(-limit, limit)
    axis.set_ylim(-1.9, len(rows) - 0.3)  # the bottom strip holds the legend, clear of every row
    axis.set_xlabel("effect / margin (the smallest effect of interest); its own units at the right", fontsize=8)
    handles = [plt.Line2D([], [], color=colour, lw=2, label=verdict) for verdict, colour in VERDICT_COLOURS.items()
               if verdict in set(rows["verdict"])]
    handles += [plt.Line2D([], [], color="black", lw=0, marker="|", ms=10, label="boundary"),
                plt.Line2D([], [], color="0.3", lw=0, marker="D", mfc="none", label="paper's gap, scaled"),
                plt.Rectangle((0, 0), 1, 1, color="0.93", label="within the margin")]
    axis.legend(handles=handles, loc="lower center", ncol=3, fontsize=6, framealpha=0.9)


def draw_forest(claims: pd.DataFrame):
    """Every registered comparison as in the studies' figures, grouped by claim with a rule between claims."""
    rows = claims.reset_index(drop=True)
    figure, axis = plt.subplots(figsize=(10, 0.3 * len(rows) + 1.6))
    labels = [f"{r.claim}. {r.study}: {r.comparison}, {metric_words(r.metric)}" for r in rows.itertuples()]
    draw_effect_rows(axis, rows, labels)
    y = np.arange(len(rows))[::-1]
    for position in np.flatnonzero(rows["claim"].to_numpy()[1:] != rows["claim"].to_numpy()[:-1]):
        axis.axhline((y[position] + y[position + 1]) / 2, color="0.7", lw=0.5)
    axis.set_title("Every registered comparison", fontsize=10)
    figure.tight_layout()
    return figure


LABEL_QUALITY = {"label_nmi": "NMI with true classes", "label_purity": "purity",
                 "labels_changed": "fraction of labels changed", "cluster_size_cv": "cluster size CV (std/mean)"}
HEALTH = {"loss": "training loss", "loss_inter_to_chance": "inter loss / its chance level",
          "inter_negatives_same_class": "share of inter negatives\nof the query's class",
          "inter_positives_same_class": "share of inter positives\nof the query's class"}
OVERCLUSTERING = {"deputy_same_class_rate": "share of queries whose deputy\nhas their class (claim 8)",
                  "overclustering_given_b": "Pr(Omega | B)"}


def draw_label_quality(table: pd.DataFrame, spec):
    """Pseudo-label evidence per epoch for online vs offline labels: NMI and purity against the true
    classes, the fraction of labels that changed (from epoch 1), and the spread of cluster sizes."""
    return draw_curves(table, spec, LABEL_QUALITY, from_epoch_1=frozenset({"labels_changed"}))


def draw_overclustering(table: pd.DataFrame, spec):
    """The over-clustering measurements of every epoch per deputy: the per-query share that claim 8 tests,
    and Pr(Omega | B); Pr(Omega | A) is left out: with 10 classes it is 1 in every batch (Table 6 has it)."""
    return draw_curves(table, spec, {k: v for k, v in OVERCLUSTERING.items() if k in table.columns},
                       probabilities=True)


def draw_curves(table: pd.DataFrame, spec, columns: dict[str, str], from_epoch_1: frozenset = frozenset(),
                probabilities: bool = False):
    """One panel per column: its mean and 95% interval over seeds against the epoch, a line per factor value."""
    figure, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.6), squeeze=False)
    palette = arm_palette(spec)
    for axis, (column, label) in zip(axes[0], columns.items()):
        summary = summarize(table[table["epoch"] >= (1 if column in from_epoch_1 else 0)], column, ["value", "epoch"])
        for value in arm_order(table, spec):
            part = summary[summary["value"] == value].sort_values("epoch")
            axis.plot(part["epoch"], part["mean"], marker="o", ms=3, color=palette[value], label=str(value))
            axis.fill_between(part["epoch"], part["ci_low"], part["ci_high"], color=palette[value], alpha=0.2)
        epoch_axis(axis)
        if probabilities:
            axis.set_ylim(-0.02, 1.02)
        axis.set_title(label, fontsize=9)
    axes[0][0].legend(title=factor_label(spec), fontsize=7)
    figure.tight_layout()
    return figure
