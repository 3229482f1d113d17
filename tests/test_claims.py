import math

import numpy as np
import pandas as pd
import pytest

from analysis.claims import claim_verdict, comparison_verdict, evaluate_claims, welch_interval
from study.catalogue import CLAIMS, Claim, Comparison


def study_table(values_by_factor: dict, epochs=(0, 5), metric="svm_map"):
    """A results table with one trial per (factor value, seed); the final epoch holds the given value."""
    rows = []
    for value, finals in values_by_factor.items():
        for seed, final in enumerate(finals):
            for epoch in epochs:
                rows.append({"value": value, "seed": seed, "epoch": epoch, "config_hash": f"{value}-{seed}",
                             metric: 50.0 if epoch == 0 else final, "knn_top1": 40.0 + epoch})
    return pd.DataFrame(rows)


def claim(*pairs):
    return Claim(99, "test claim", "figX", tuple(Comparison("s", hi, lo, "svm_map") for hi, lo in pairs))


def test_welch_interval_against_hand_computation():
    a, b = np.array([80.0, 81.0, 82.0]), np.array([70.0, 72.0, 74.0])
    effect, low, high = welch_interval(a, b)
    # means 81 and 72; variances 1 and 4; se = sqrt(1/3 + 4/3) = 1.2910; Welch dof = (5/3)^2 /
    # ((1/3)^2/2 + (4/3)^2/2) = 2.9412; t_0.975(2.9412) = 3.2188, so half-width = 4.1554.
    assert effect == 9.0
    assert math.isclose(high - low, 2 * 4.1554, rel_tol=1e-3)


def test_clear_win_is_reproduced():
    table = study_table({"a": [80.0, 80.5, 81.0], "b": [70.0, 70.4, 71.0]})
    result = evaluate_claims({"s": table}, [claim(("a", "b"))])
    assert result["verdict"].tolist() == ["reproduced"] and result["claim_verdict"].iloc[0] == "reproduced"
    assert math.isclose(result["effect"].iloc[0], 80.5 - 70.4666667, rel_tol=1e-6)


def test_clear_loss_is_contradicted():
    table = study_table({"a": [60.0, 60.5, 61.0], "b": [70.0, 70.4, 71.0]})
    result = evaluate_claims({"s": table}, [claim(("a", "b"))])
    assert result["verdict"].tolist() == ["contradicted"]


def test_overlap_is_inconclusive():
    table = study_table({"a": [70.0, 75.0, 80.0], "b": [72.0, 74.0, 76.0]})
    result = evaluate_claims({"s": table}, [claim(("a", "b"))])
    assert result["verdict"].tolist() == ["inconclusive"]


def test_claim_combines_its_comparisons():
    table = study_table({"a": [80.0, 80.5, 81.0], "b": [70.0, 70.4, 71.0], "c": [60.0, 75.0, 90.0]})
    mixed = evaluate_claims({"s": table}, [claim(("a", "b"), ("a", "c"))])
    assert mixed["verdict"].tolist() == ["reproduced", "inconclusive"]
    assert set(mixed["claim_verdict"]) == {"inconclusive"}
    assert claim_verdict(["reproduced", "contradicted"]) == "contradicted"
    assert claim_verdict(["reproduced", "reproduced"]) == "reproduced"


def test_missing_study_and_single_seed():
    assert evaluate_claims({}, [claim(("a", "b"))])["claim_verdict"].iloc[0] == "missing"
    assert comparison_verdict(float("nan"), float("nan")) == "inconclusive"


def test_mean_over_epochs_metric_ignores_epoch_zero():
    table = study_table({"a": [80.0, 80.0], "b": [80.0, 80.0]}, epochs=(0, 1, 2))
    table.loc[(table["value"] == "a") & (table["epoch"] == 0), "knn_top1"] = 0.0  # must not count
    result = evaluate_claims({"s": table}, [Claim(1, "t", "f", (Comparison("s", "a", "b", "mean:knn_top1"),))])
    assert result["effect"].iloc[0] == pytest.approx(0.0)


def test_one_sample_rise_and_fall():
    rows = []
    for seed, (start, end) in enumerate([(0.10, 0.50), (0.12, 0.55), (0.11, 0.52)]):
        rows += [{"value": "k1", "seed": seed, "epoch": 0, "config_hash": f"k1-{seed}", "p": start},
                 {"value": "k1", "seed": seed, "epoch": 9, "config_hash": f"k1-{seed}", "p": end}]
    table = pd.DataFrame(rows)
    rise = Claim(8, "t", "f", (Comparison("s", "k1", None, "rise:p"),))
    fall = Claim(8, "t", "f", (Comparison("s", "k1", None, "fall:p"),))
    rising = evaluate_claims({"s": table}, [rise])
    assert rising["verdict"].iloc[0] == "reproduced"
    assert rising["effect"].iloc[0] == pytest.approx((0.40 + 0.43 + 0.41) / 3)
    assert rising["comparison"].iloc[0] == "k1 > 0"
    assert evaluate_claims({"s": table}, [fall])["verdict"].iloc[0] == "contradicted"


def test_a_metric_the_results_do_not_hold_reads_missing():
    table = study_table({"a": [80.0, 81.0], "b": [70.0, 71.0]})
    claims = (Claim(98, "two metrics", "figX", (Comparison("s", "a", "b", "svm_map"),
                                                Comparison("s", "a", "b", "rise:not_recorded"))),)
    result = evaluate_claims({"s": table}, claims)
    assert result["verdict"].tolist() == ["reproduced", "missing"]
    assert set(result["claim_verdict"]) == {"missing"}


def methods_table(finals_by_method: dict, metrics=("linear_top1", "svm_map")):
    """The methods study: per method, the final value of every metric for each seed."""
    rows = []
    for method, finals in finals_by_method.items():
        for seed, final in enumerate(finals):
            for epoch in (0, 5):
                rows.append({"value": method, "seed": seed, "epoch": epoch, "config_hash": f"{method}-{seed}",
                             **{m: 10.0 if epoch == 0 else final for m in metrics}})
    return pd.DataFrame(rows)


def test_claim_13_compares_each_base_method_with_its_interclr_variant_on_both_metrics():
    base = {"npidv2": [60.0, 60.5, 61.0], "mocov2": [62.0, 62.4, 63.0], "byol": [64.0, 64.5, 65.0]}
    better = {f"{m}-interclr": [v + 5.0 for v in finals] for m, finals in base.items()}
    claim13 = [c for c in CLAIMS if c.number == 13]
    result = evaluate_claims({"methods": methods_table({**base, **better})}, claim13)
    assert sorted(zip(result["comparison"], result["metric"])) == sorted(
        (f"{m}-interclr > {m}", metric) for m in ("npidv2", "mocov2", "byol") for metric in ("linear_top1", "svm_map"))
    assert set(result["verdict"]) == {"reproduced"} and set(result["claim_verdict"]) == {"reproduced"}
    assert result["effect"].tolist() == pytest.approx([5.0] * 6)
    assert set(result["figure"]) == {"table1"}

    worse_byol = {**base, **better, "byol-interclr": [v - 5.0 for v in base["byol"]]}
    result = evaluate_claims({"methods": methods_table(worse_byol)}, claim13)
    assert result.loc[result["comparison"] == "byol-interclr > byol", "verdict"].tolist() == ["contradicted"] * 2
    assert set(result["claim_verdict"]) == {"contradicted"}
    assert set(evaluate_claims({}, claim13)["claim_verdict"]) == {"missing"}  # the study not run yet
