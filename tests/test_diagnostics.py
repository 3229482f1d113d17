"""The numbers analysis.diagnostics prints beside its figures, on a hand-made table (the command itself:
tests/test_report.py)."""

import pandas as pd
import pytest

from analysis.diagnostics import summary_rows


def margin_inter_table(loss_at_end: float) -> pd.DataFrame:
    """Two margins, two seeds, epochs 0-2; seed 1 adds 0.2 to seed 0's loss and NMI, and changes 0.1 fewer labels."""
    rows = []
    for value in (-0.5, 0.0):
        for seed in (0, 1):
            shift = 0.2 * seed
            for epoch, loss, nmi, changed, reseeded in ((0, float("nan"), 0.4, float("nan"), float("nan")),
                                                        (1, 2.0 + value, 0.1, 0.9, 4 + seed),
                                                        (2, loss_at_end + value, 0.3, 0.3, 1)):
                rows.append({"value": value, "seed": seed, "epoch": epoch, "loss_inter": loss + shift,
                             "label_nmi": nmi + shift, "labels_changed": changed - 0.1 * seed,
                             "clusters_reseeded": reseeded,
                             "config_hash": f"{value}-{seed}", "knn_top1": 50.0})
    return pd.DataFrame(rows)


def lookup(summary, run, quantity, value=0.0, epoch=None):
    rows = summary[(summary["run"] == run) & (summary["quantity"] == quantity) & (summary["value"] == value)]
    if epoch is not None:
        rows = rows[rows["epoch"] == epoch]
    assert len(rows) == 1, rows
    return rows["mean"].iloc[0]


def test_summary_gives_seed_means_of_the_first_and_last_epoch_and_the_label_extremes():
    summary = summary_rows(margin_inter_table(loss_at_end=1.0), margin_inter_table(loss_at_end=0.5), value=0.0)
    assert lookup(summary, "before", "loss_inter", -0.5, epoch=1) == pytest.approx(1.6)  # (1.5 + 1.7) / 2
    assert lookup(summary, "before", "loss_inter", -0.5, epoch=2) == pytest.approx(0.6)
    assert lookup(summary, "after", "loss_inter", 0.0, epoch=2) == pytest.approx(0.6)
    assert lookup(summary, "after", "label_nmi", epoch=0) == pytest.approx(0.5)
    assert lookup(summary, "after", "label_nmi", epoch=1) == pytest.approx(0.2)  # (0.1 + 0.3) / 2
    assert lookup(summary, "after", "label_nmi", epoch=2) == pytest.approx(0.4)  # the last epoch: (0.3 + 0.5) / 2
    assert lookup(summary, "after", "label_nmi_lowest") == pytest.approx(0.2)
    assert lookup(summary, "after", "label_nmi_lowest", epoch=1) == pytest.approx(0.2)
    never = summary[(summary["run"] == "after") & (summary["quantity"] == "label_nmi_back_at_epoch_0_level")]
    assert never["epoch"].isna().all() and never["mean"].isna().all()  # 0.4 at epoch 2 is below 0.5 at epoch 0
    assert lookup(summary, "after", "labels_changed") == pytest.approx(0.85)  # epoch 1: (0.9 + 0.8) / 2
    assert lookup(summary, "after", "clusters_reseeded_most") == pytest.approx(4.5)


def test_labels_are_back_at_the_first_epoch_after_the_dip_that_reaches_the_epoch_0_level():
    after = margin_inter_table(loss_at_end=0.5)
    after.loc[after["epoch"] == 2, "label_nmi"] += 0.3  # epoch 2: 0.6 and 0.8, over 0.4 and 0.6 at epoch 0
    summary = summary_rows(margin_inter_table(loss_at_end=1.0), after, value=0.0)
    assert lookup(summary, "after", "label_nmi_back_at_epoch_0_level", epoch=2) == pytest.approx(0.7)
