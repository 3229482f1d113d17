from fractions import Fraction

import pandas as pd

from analysis.tables import bernoulli_table, markdown, table1, table6, table8


def triplet_rows(values, metric_by_value, epochs=(0, 4)):
    rows = []
    for value in values:
        for seed in range(3):
            for epoch in epochs:
                first, last = metric_by_value[value]
                rows.append({"value": value, "seed": seed, "epoch": epoch, "config_hash": f"{value}-{seed}",
                             "overclustering_given_a": first if epoch == 0 else last,
                             "overclustering_given_b": (first if epoch == 0 else last) / 2,
                             "linear_top1": 50.0 + seed, "knn_top1": 40.0})
    return pd.DataFrame(rows)


def test_table6_reads_first_and_last_epoch_beside_the_paper():
    frame = table6(triplet_rows(["rank-1", "rank-5", "median"],
                                {"rank-1": (0.2, 0.9), "rank-5": (0.1, 0.3), "median": (0.1, 0.01)}))
    rank1 = frame.set_index("deputy").loc["rank-1"]
    assert rank1["Pr(Omega|A) first"].startswith("0.2000") and rank1["Pr(Omega|A) last"].startswith("0.9000")
    assert rank1["paper A (0 -> 180)"] == "0.1538 -> 0.9656" and rank1["seeds"] == 3
    assert rank1["Pr(Omega|B) first"].startswith("0.1000") and rank1["Pr(Omega|B) last"].startswith("0.4500")
    assert rank1["paper B (0 -> 180)"] == "0.1618 -> 0.9948"  # the paper's Table 6, k = 1


def test_table8_mean_and_interval_over_seeds():
    frame = table8(triplet_rows(["rank-1", "median"], {"rank-1": (0, 0), "median": (0, 0)}))
    row = frame.set_index("deputy").loc["rank-1"]
    # linear top-1 over seeds 50, 51, 52: mean 51, t(0.975, 2) * 1 / sqrt(3) = 2.48 -> [48.5, 53.5]
    assert row["linear top-1 (%)"] == "51.0 [48.5, 53.5]" and row["paper linear top-1 (%)"] == 28.9
    assert row["kNN top-1 (%)"] == "40.0 [40.0, 40.0]"  # every seed's kNN is 40
    assert frame.set_index("deputy").loc["rank-5"]["linear top-1 (%)"] == "-"  # not run: shown empty


def test_bernoulli_table_and_markdown():
    frame = bernoulli_table(127, Fraction(1, 10), {"rank-1": 1, "median": 63})
    paper = frame[frame["setting"].str.startswith("paper")].set_index("k")
    assert paper.loc[52, "exact"] == "1.50e-126" and paper.loc[52, "paper states"] == "6.53e-121"
    used = frame[frame["setting"].str.startswith("used")].set_index("k")
    assert used.loc[1, "exact"] == "1.00e+00"  # with p = 0.1 and 127 negatives, a same-class one is certain
    assert used.loc[63, "exact"] == "1.59e-29"  # sum over j >= 63 of C(127, j) 0.1^j 0.9^(127-j), in fractions
    text = markdown(frame.fillna(""))
    assert text.splitlines()[0].startswith("| setting | k | exact") and text.count("\n") == len(frame) + 1


def test_table1_means_over_seeds_beside_the_paper():
    rows = []
    for method, top1, svm in [("npidv2", (60.0, 62.0, 64.0), (70.0, 71.0, 72.0)),
                              ("npidv2-interclr", (65.0, 65.0, 65.0), (75.0, 76.0, 77.0))]:
        for seed in range(3):
            for epoch in (0, 3):
                rows.append({"value": method, "seed": seed, "epoch": epoch, "config_hash": f"{method}-{seed}",
                             "linear_top1": 1.0 if epoch == 0 else top1[seed],
                             "svm_map": 2.0 if epoch == 0 else svm[seed]})
    frame = table1(pd.DataFrame(rows)).set_index("method")
    assert list(frame.index) == ["npidv2", "npidv2-interclr", "mocov2", "mocov2-interclr", "byol", "byol-interclr"]
    # npidv2 top-1 60, 62, 64: mean 62, sd 2, t(0.975, 2) * 2 / sqrt(3) = 4.97 -> [57.0, 67.0]
    assert frame.loc["npidv2", "linear top-1 (%)"] == "62.0 [57.0, 67.0]"
    assert frame.loc["npidv2", "SVM mAP (%)"] == "71.0 [68.5, 73.5]"
    assert frame.loc["npidv2-interclr", "linear top-1 (%)"] == "65.0 [65.0, 65.0]"
    assert frame.loc["npidv2", "paper linear top-1 (%)"] == 64.6
    assert frame.loc["npidv2", "paper VOC07 SVM mAP (%)"] == 81.7
    assert frame.loc["byol-interclr", "paper linear top-1 (%)"] == 73.5
    assert frame.loc["byol-interclr", "paper VOC07 SVM mAP (%)"] == 86.5
    assert frame.loc["mocov2", "linear top-1 (%)"] == "-" and frame.loc["mocov2", "seeds"] == 0  # not run
    assert frame.loc["npidv2", "seeds"] == 3
