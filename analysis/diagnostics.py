"""Before / after evidence for an inter-image branch that trains: the inter loss per margin value
against chance and zero, and the online pseudo-labels' NMI, churn and re-seeding per epoch.

    python -m analysis.diagnostics --before results/tiny/diagnostics/before-margin-inter \
        --after results/tiny/margin-inter --negatives 16 --out results/tiny/diagnostics

Both folders hold a `margin-inter` results table (online labels, semi-hard negatives); the figures
are inter_loss.png and label_nmi.png (and PDFs) in --out, and the figures' numbers, printed and
written to diagnostics.csv there.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis.figures import COLORBLIND, epoch_axis, save
from analysis.results import summarize
from study.cli import OneLineParser
from study.files import replace_file

NEEDED = {"value", "seed", "epoch", "loss_inter", "label_nmi", "labels_changed", "clusters_reseeded"}
LABEL_PANELS = {"label_nmi": "pseudo-label NMI", "labels_changed": "share of labels changed in the epoch",
                "clusters_reseeded": "clusters re-seeded in the epoch"}


def draw_inter_loss(before: pd.DataFrame, after: pd.DataFrame, negatives: int):
    """The inter loss per epoch, a line per margin value (the paper's value), before and after, on a log
    scale against chance ln(K + 1) and zero."""
    values = sorted(set(before["value"]) | set(after["value"]))
    palette = dict(zip(values, COLORBLIND))
    figure, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for axis, (title, table) in zip(axes, (("before", before), ("after", after))):
        summary = summarize(table[table["epoch"] >= 1], "loss_inter", ["value", "epoch"])
        for value, part in summary.groupby("value"):
            part = part.sort_values("epoch")
            axis.plot(part["epoch"], part["mean"], marker="o", ms=3, color=palette[value], label=f"m = {value:g}")
            axis.fill_between(part["epoch"], part["ci_low"], part["ci_high"], color=palette[value], alpha=0.2)
        axis.axhline(math.log(negatives + 1), color="black", linestyle="--", linewidth=1)
        axis.text(1, math.log(negatives + 1) * 1.08, f"chance, ln({negatives + 1})", fontsize=8)
        axis.set_yscale("log")
        epoch_axis(axis)
        axis.set_title(f"{title} ({table['seed'].nunique()} seed(s))")
    axes[0].set_ylabel("inter MarginNCE (log scale; 0 is the bottom)")
    axes[1].legend(title="inter margin\n(paper's value)", fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    figure.tight_layout()
    return figure


def draw_label_maintenance(before: pd.DataFrame, after: pd.DataFrame, value: float):
    """Online labels of one margin value, before and after: NMI against the classes (from epoch 0),
    the share of labels changed and the clusters re-seeded (from epoch 1)."""
    figure, axes = plt.subplots(1, len(LABEL_PANELS), figsize=(4 * len(LABEL_PANELS), 3.6))
    for axis, (column, label) in zip(axes, LABEL_PANELS.items()):
        for (title, table), colour in zip((("before", before), ("after", after)), COLORBLIND):
            rows = table[(table["value"] == value) & (table["epoch"] >= (0 if column == "label_nmi" else 1))]
            part = summarize(rows, column, ["epoch"]).sort_values("epoch")
            axis.plot(part["epoch"], part["mean"], marker="o", ms=3, color=colour,
                      label=f"{title} ({rows['seed'].nunique()} seed(s))")
            axis.fill_between(part["epoch"], part["ci_low"], part["ci_high"], color=colour, alpha=0.2)
        epoch_axis(axis)
        axis.set_title(label)
    axes[0].legend(title=f"online labels, m = {value:g}")
    figure.tight_layout()
    return figure


def summary_rows(before: pd.DataFrame, after: pd.DataFrame, value: float) -> pd.DataFrame:
    """The numbers a reader quotes from the figures, as seed means: per margin value, the inter loss in
    the first and last trained epoch; for the labels of `value`, NMI at epoch 0, 1 and the end, its
    lowest, the first epoch after that it is back at its epoch-0 level (mean NaN when never), the share
    of labels changed in epoch 1, and the most clusters re-seeded in any epoch."""
    rows = []
    for title, table in (("before", before), ("after", after)):
        trained = table[table["epoch"] >= 1]
        first, last = trained["epoch"].min(), trained["epoch"].max()
        ends = summarize(trained[trained["epoch"].isin((first, last))], "loss_inter", ["value", "epoch"])
        rows += [{"run": title, "quantity": "loss_inter", "value": row.value, "epoch": row.epoch, "mean": row.mean}
                 for row in ends.sort_values(["value", "epoch"]).itertuples()]
        labels = table[table["value"] == value]
        nmi = labels.groupby("epoch")["label_nmi"].mean()
        back = nmi[(nmi.index > nmi.idxmin()) & (nmi >= nmi.get(0))]
        for quantity, epoch, mean in (
                ("label_nmi", 0, nmi.get(0)), ("label_nmi", 1, nmi.get(1)), ("label_nmi", last, nmi.get(last)),
                ("label_nmi_lowest", int(nmi.idxmin()), nmi.min()),
                ("label_nmi_back_at_epoch_0_level", back.index.min() if len(back) else None,
                 back.iloc[0] if len(back) else float("nan")),
                ("labels_changed", 1, labels.loc[labels["epoch"] == 1, "labels_changed"].mean()),
                ("clusters_reseeded_most", None, labels.groupby("epoch")["clusters_reseeded"].mean().max())):
            rows.append({"run": title, "quantity": quantity, "value": value, "epoch": epoch, "mean": mean})
    summary = pd.DataFrame(rows)
    summary["epoch"] = summary["epoch"].astype("Int64")
    return summary


def read(folder: Path) -> pd.DataFrame:
    path = folder / "trials.parquet"
    if not path.exists():
        raise ValueError(f"no results table at {path}; run `python -m study.run margin-inter --out {folder}` first")
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as error:  # pyarrow's read errors subclass these
        raise ValueError(f"cannot read {path} ({str(error).splitlines()[0]}); rerun its study") from None
    lacking = NEEDED - set(table.columns)
    if lacking or table.empty:
        what = f"no column {', '.join(sorted(lacking))}" if lacking else "no rows"
        raise ValueError(f"{path} has {what}; give a margin-inter results folder")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m analysis.diagnostics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="margin-inter results before the change")
    parser.add_argument("--after", type=Path, required=True, help="margin-inter results after the change")
    parser.add_argument("--negatives", type=int, default=16, help="K of the runs (the tiny profile's 16)")
    parser.add_argument("--value", type=float, default=0.0, help="the margin value whose labels to show")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        before, after = read(args.before), read(args.after)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.negatives < 1 or not {args.value} <= set(before["value"]) & set(after["value"]):
        print(f"error: need --negatives >= 1 and a --value both tables hold "
              f"({', '.join(f'{v:g}' for v in sorted(set(before['value']) & set(after['value'])))})", file=sys.stderr)
        return 2
    print(save(draw_inter_loss(before, after, args.negatives), args.out / "inter_loss"))
    print(save(draw_label_maintenance(before, after, args.value), args.out / "label_nmi"))
    summary = summary_rows(before, after, args.value)
    replace_file(args.out / "diagnostics.csv", summary.to_csv(index=False, float_format="%.4g"))
    print(summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
