from fractions import Fraction

import pandas as pd

from analysis.tables import bernoulli_table, markdown, table6, table8


def triplet_rows(values, metric_by_value, epochs=(0, 4)):
    rows = []
    for value in values:
        for seed in range(3):
            for epoch in epochs:
                first, last = metric_by_value[value]
                rows.append({"value": value, "seed": seed, "epoch": epoch, "config_hash": f"{value}-{seed}",
                             "overclustering_given_a": first if epoch == 0 else last,
                             "overclustering_given_b": first if epoch == 0 else last,
                             "linear_top1": 50.0 + seed, "knn_top1": 40.0})
    return pd.DataFrame(rows)


def test_table6_reads_first_and_last_epoch_beside_the_paper():
    frame = table6(triplet_rows(["rank-1", "rank-5", "median"],
                                {"rank-1": (0.2, 0.9), "rank-5": (0.1, 0.3), "median": (0.1, 0.01)}))
    rank1 = frame.set_index("deputy").loc["rank-1"]
    assert rank1["Pr(Omega|A) first"].startswith("0.2000") and rank1["Pr(Omega|A) last"].startswith("0.9000")
    assert rank1["paper A (0 -> 180)"] == "0.1538 -> 0.9656" and rank1["seeds"] == 3


def test_table8_mean_and_interval_over_seeds():
    frame = table8(triplet_rows(["rank-1", "median"], {"rank-1": (0, 0), "median": (0, 0)}))
    row = frame.set_index("deputy").loc["rank-1"]
    # linear top-1 over seeds 50, 51, 52: mean 51, t(0.975, 2) * 1 / sqrt(3) = 2.48 -> [48.5, 53.5]
    assert row["linear top-1 (%)"] == "51.0 [48.5, 53.5]" and row["paper linear top-1 (%)"] == 28.9
    assert frame.set_index("deputy").loc["rank-5"]["linear top-1 (%)"] == "-"  # not run: shown empty


def test_bernoulli_table_and_markdown():
    frame = bernoulli_table(127, Fraction(1, 10), {"rank-1": 1, "median": 63})
    paper = frame[frame["setting"].str.startswith("paper")].set_index("k")
    assert paper.loc[52, "exact"] == "1.50e-126" and paper.loc[52, "paper states"] == "6.53e-121"
    used = frame[frame["setting"].str.startswith("used")].set_index("k")
    assert used.loc[1, "exact"] == "1.00e+00"  # with p = 0.1 and 127 negatives, a same-class one is certain
    text = markdown(frame.fillna(""))
    assert text.splitlines()[0].startswith("| setting | k | exact") and text.count("\n") == len(frame) + 1
