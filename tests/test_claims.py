import math

import numpy as np
import pandas as pd
import pytest

from analysis.claims import (REACH_FRACTION, claim_verdict, comparison_verdict, evaluate_claims, left_out_trials,
                             per_trial)
from analysis.stats import SYMBOLS
from catalogue import (CLAIMS, FIGURE_GAP, INTER_LEARNS, PAPER_GAINS, QUALITY_METRICS, Claim,
                             Comparison)


def study_table(values_by_factor: dict, epochs=(0, 5), metric="svm_map"):
    """A results table with one trial per (factor value, seed); the final epoch holds the given value."""
    rows = []
    for value, finals in values_by_factor.items():
        for seed, final in enumerate(finals):
            for epoch in epochs:
                rows.append({"value": value, "seed": seed, "epoch": epoch, "config_hash": f"{value}-{seed}",
                             metric: 50.0 if epoch == 0 else final, "knn_top1": 40.0 + epoch})
    return pd.DataFrame(rows)


def claim(*pairs, form="superiority", margin=0.5):
    return Claim(99, "test claim", "figX", tuple(Comparison("s", hi, lo, "svm_map", margin, form) for hi, lo in pairs))


def test_clear_win_is_reproduced_with_the_blocked_effect():
    table = study_table({"a": [80.0, 80.5, 81.0], "b": [70.0, 70.4, 71.0]})
    result = evaluate_claims({"s": table}, [claim(("a", "b"))])
    assert result["verdict"].tolist() == ["reproduced"] and result["claim_verdict"].iloc[0] == "reproduced"
    assert math.isclose(result["effect"].iloc[0], 80.5 - 70.4666667, rel_tol=1e-6)


def test_clear_loss_is_contradicted():
    table = study_table({"a": [60.0, 60.5, 61.0], "b": [70.0, 70.4, 71.0]})
    result = evaluate_claims({"s": table}, [claim(("a", "b"))])
    assert result["verdict"].tolist() == ["contradicted"]


def test_overlap_is_inconclusive():
    table = study_table({"a": [70.0, 75.0, 80.0], "b": [74.0, 73.0, 76.0]})
    result = evaluate_claims({"s": table}, [claim(("a", "b"))])
    assert result["verdict"].tolist() == ["inconclusive"]


def test_a_shared_seed_effect_is_blocked_out():
    # Seed 2 lifts both arms by 6 points: a Welch interval over 3 vs 3 would contain 0, the blocked one not.
    table = study_table({"a": [70.5, 71.0, 77.2], "b": [70.0, 70.3, 76.4]})
    assert evaluate_claims({"s": table}, [claim(("a", "b"))])["verdict"].tolist() == ["reproduced"]


def test_non_superiority_and_equivalence_against_the_margin():
    close = study_table({"a": [70.1, 72.0, 74.05], "b": [70.0, 72.1, 74.0]})
    assert evaluate_claims({"s": close}, [claim(("a", "b"), form="non-superiority")])["verdict"].iloc[0] == \
        "reproduced"
    assert evaluate_claims({"s": close}, [claim(("a", "b"), form="equivalence")])["verdict"].iloc[0] == "reproduced"
    # ~0 and within the margin both ways: a superiority claim gets "negligible", not "inconclusive"
    assert evaluate_claims({"s": close}, [claim(("a", "b"))])["verdict"].iloc[0] == "negligible"
    better = study_table({"a": [72.1, 74.0, 76.05], "b": [70.0, 72.1, 74.0]})  # 2 points better
    assert evaluate_claims({"s": better}, [claim(("a", "b"), form="non-superiority")])["verdict"].iloc[0] == \
        "contradicted"
    assert evaluate_claims({"s": better}, [claim(("a", "b"), form="equivalence")])["verdict"].iloc[0] == \
        "contradicted"
    worse = study_table({"a": [68.1, 70.0, 72.05], "b": [70.0, 72.1, 74.0]})
    assert evaluate_claims({"s": worse}, [claim(("a", "b"), form="non-inferiority")])["verdict"].iloc[0] == \
        "contradicted"
    assert evaluate_claims({"s": close}, [claim(("a", "b"), form="non-inferiority")])["verdict"].iloc[0] == \
        "reproduced"


def test_holm_corrects_within_a_claim():
    # a beats b with a one-sided p of 0.0136 (below 2.5%); in a claim with a second comparison c > b (c runs
    # 1 point below b, so its p is near 1) Holm doubles the smaller p to 0.027, past 2.5%.
    b = [70.0, 72.1, 73.4]
    table = study_table({"a": [x + d for x, d in zip(b, [1.0, 0.2, 0.9])], "b": b, "c": [x - 1 for x in b]})
    alone = evaluate_claims({"s": table}, [claim(("a", "b"))])
    together = evaluate_claims({"s": table}, [claim(("a", "b"), ("c", "b"))])
    assert 0.0125 < alone["p_support"].iloc[0] < 0.025 and alone["verdict"].iloc[0] == "reproduced"
    assert together["p_support"].iloc[0] == pytest.approx(2 * alone["p_support"].iloc[0])
    assert together["verdict"].tolist() == ["inconclusive", "contradicted"]


def test_an_unfinished_trial_never_enters_a_verdict():
    table = study_table({"a": [80.0, 80.5, 81.0], "b": [70.0, 70.4, 71.0]}, epochs=(0, 3, 5))
    # seed 2 of b stopped at epoch 3 with a value that would flip the comparison
    table = table[~((table["value"] == "b") & (table["seed"] == 2) & (table["epoch"] == 5))].copy()
    table.loc[(table["value"] == "b") & (table["seed"] == 2) & (table["epoch"] == 3), "svm_map"] = 99.0
    result = evaluate_claims({"s": table}, [claim(("a", "b"))])
    assert result["verdict"].tolist() == ["reproduced"] and result["seeds"].iloc[0] == 2
    assert left_out_trials({"s": table}) == {"s": ["b seed 2 (epoch 3 of 5)"]}


def test_claim_combines_its_comparisons():
    assert claim_verdict(["reproduced", "inconclusive"]) == "inconclusive"
    assert claim_verdict(["reproduced", "contradicted"]) == "contradicted"
    assert claim_verdict(["reproduced", "reproduced"]) == "reproduced"
    assert claim_verdict(["reproduced", "missing"]) == "missing"
    # The rule's order: contradicted, then not testable, then negligible, before reproduced.
    assert claim_verdict(["reproduced", "negligible"]) == "negligible"
    assert claim_verdict(["negligible", "not testable"]) == "not testable"
    assert claim_verdict(["not testable", "contradicted"]) == "contradicted"
    assert claim_verdict(["inconclusive", "negligible"]) == "negligible"


def test_missing_study_and_single_seed():
    assert evaluate_claims({}, [claim(("a", "b"))])["claim_verdict"].iloc[0] == "missing"
    single = evaluate_claims({"s": study_table({"a": [80.0], "b": [70.0]})}, [claim(("a", "b"))])
    assert single["verdict"].iloc[0] == "inconclusive"  # no residual degrees of freedom
    assert comparison_verdict(float("nan"), float("nan")) == "inconclusive"


def test_reach_is_the_first_epoch_at_the_common_level():
    rows = []
    curves = {("a", 0): [10, 50, 90, 96], ("a", 1): [10, 60, 96, 98], ("b", 0): [10, 20, 40, 60],
              ("b", 1): [10, 30, 50, 70]}
    for (value, seed), curve in curves.items():
        rows += [{"value": value, "seed": seed, "epoch": e, "config_hash": f"{value}-{seed}", "knn_top1": v}
                 for e, v in enumerate(curve)]
    values = per_trial(pd.DataFrame(rows), "reach:knn_top1").set_index(["value", "seed"])["metric"]
    # best final mean 97; level 0.95 * 97 = 92.15: a0 at epoch 3, a1 at 2; b never (counts as epoch 4)
    assert REACH_FRACTION == 0.95
    assert values.to_dict() == {("a", 0): 3, ("a", 1): 2, ("b", 0): 4, ("b", 1): 4}


def test_the_registry_says_what_the_papers_say():
    comparisons = [c for claim in CLAIMS for c in claim.comparisons]
    assert len(set(comparisons)) == len(comparisons)  # each comparison in one place
    by_claim = {claim.number: claim for claim in CLAIMS}
    forms = {number: {(c.higher, c.lower, c.form) for c in claim.comparisons} for number, claim in by_claim.items()}
    assert ("online", "offline", "superiority") in forms[1]  # "end higher", not "at least as high"
    assert forms[3] == {(0.25, 0.0, "superiority"), (0.5, 0.0, "superiority"), (0.0, -0.25, "superiority"),
                        (0.0, -0.5, "superiority")}  # every arm of Fig. 7a
    assert {(hi, lo) for hi, lo, f in forms[4] if f == "superiority"} == {(-0.5, 0.0), (-0.5, 0.25), (-0.5, 0.5),
                                                                         (0.0, 0.5)}  # best; +0.5 degrades
    assert {lo for hi, lo, f in forms[4] if f == "non-inferiority"} == {-1.0, -0.25}  # "near" -0.5
    assert (0.25, 0.0, "non-superiority") in forms[4]
    assert forms[6] == {(10.0, 1.0, "superiority"), (20.0, 10.0, "equivalence")}
    assert forms[7] == {(4, 1, "equivalence"), (4, 16, "superiority")}  # marginal; degrades
    assert (0.75, 0.5, "non-inferiority") in forms[5]
    assert ("smoothed-5", "rank-1", "superiority") in forms[10]
    assert all("deputy_same_class_rate" in c.metric for c in by_claim[8].comparisons)
    assert all(c.form in SYMBOLS and (c.margin is None) == (c.metric in QUALITY_METRICS) for c in comparisons)
    inter_claims = {1, 2, 3, 4, 5, 6, 7, 13}
    assert {n for n, claim in by_claim.items() if INTER_LEARNS in claim.gates} == inter_claims
    assert [g.column for g in by_claim[9].gates] == ["triplet_clamped_share"]  # shown beside the verdict
    assert {c.paper_gap for c in by_claim[13].comparisons} == {1.1, 0.5, 2.9, 1.4}  # Table 1's gaps


def gated_table(inter_to_chance: float, gain: float = 20.0):
    """A lambda table whose arms 0.75 and 1.0 differ by +3 SVM points at seeds 0 and 2 and +2.8 at seed 1;
    epoch 0 sits `gain` below the last."""
    rows = []
    for value, lift in ((0.75, 3.0), (1.0, 0.0)):
        for seed in range(3):
            final = 70.0 + seed + lift + (0.2 if (value, seed) == (1.0, 1) else 0.0)
            for epoch in (0, 4):
                rows.append({"value": value, "seed": seed, "epoch": epoch, "config_hash": f"{value}-{seed}",
                             "svm_map": final if epoch else final - gain,
                             "loss_inter_to_chance": inter_to_chance if value == 0.75 else float("nan")})
    return pd.DataFrame(rows)


LAMBDA_CLAIM = Claim(5, "t", "fig8", (Comparison("lambda", 0.75, 1.0, "svm_map"),), (INTER_LEARNS,))


def test_a_failing_health_gate_makes_the_comparison_not_testable():
    learns = evaluate_claims({"lambda": gated_table(0.5)}, [LAMBDA_CLAIM])
    assert learns["verdict"].iloc[0] == "reproduced"
    at_chance = evaluate_claims({"lambda": gated_table(0.95)}, [LAMBDA_CLAIM])
    assert at_chance["verdict"].iloc[0] == "not testable" and at_chance["claim_verdict"].iloc[0] == "not testable"
    assert "loss_inter_to_chance 0.95 on 0.75" in at_chance["not_testable"].iloc[0]
    # the intra-only arm (lambda 1) records no inter loss: it neither passes nor fails the gate
    assert "(0.75)" in at_chance["health"].iloc[0] and "(1.0)" not in at_chance["health"].iloc[0]


def test_margin_rule_by_hand():
    # gain 20 SVM points; FIGURE_GAP 1 of the paper's 51: scaled gap 20 / 51 = 0.392.
    table = gated_table(0.5)
    result = evaluate_claims({"lambda": table}, [LAMBDA_CLAIM]).iloc[0]
    gain = table[table["epoch"] == 4]["svm_map"].mean() - table[table["epoch"] == 0]["svm_map"].mean()
    assert result["trained_gain"] == pytest.approx(gain)
    assert result["scaled_gap"] == pytest.approx(FIGURE_GAP / PAPER_GAINS[("InterCLR", "svm_map")] * gain)
    # value ~ arm + seed on a 2 x 3 table that is additive but for one cell moved by 0.2: residuals by hand
    moved = np.array([[0.0, 0.0, 0.0], [0.0, 0.2, 0.0]])
    residual = moved - moved.mean(1, keepdims=True) - moved.mean(0, keepdims=True) + moved.mean()
    sd = math.sqrt((residual ** 2).sum() / 2)  # df = 6 - 2 arms - 2 seed effects
    assert result["residual_sd"] == pytest.approx(sd)
    assert result["resolvable"] == pytest.approx(0.77802 * sd * math.sqrt(2), rel=1e-4)
    assert result["margin"] == pytest.approx(max(result["scaled_gap"], result["resolvable"]))
    # a 2-point trained gain scales the gap to 0.039, below what 15 seeds resolve at this SD
    small = table.copy()
    small.loc[small["epoch"] == 0, "svm_map"] += 18.0
    tiny_gain = evaluate_claims({"lambda": small}, [LAMBDA_CLAIM]).iloc[0]
    assert tiny_gain["verdict"] == "not testable" and "15 seeds resolve" in tiny_gain["not_testable"]


def test_mean_over_epochs_metric_ignores_epoch_zero():
    table = study_table({"a": [80.0, 80.0], "b": [80.0, 80.0]}, epochs=(0, 1, 2))
    table.loc[(table["value"] == "a") & (table["epoch"] == 0), "knn_top1"] = 0.0  # must not count
    result = evaluate_claims({"s": table}, [Claim(1, "t", "f", (Comparison("s", "a", "b", "mean:knn_top1", 0.5),))])
    assert result["effect"].iloc[0] == pytest.approx(0.0)


def test_one_sample_rise_and_fall():
    rows = []
    for seed, (start, end) in enumerate([(0.10, 0.50), (0.12, 0.55), (0.11, 0.52)]):
        rows += [{"value": "k1", "seed": seed, "epoch": 0, "config_hash": f"k1-{seed}", "p": start},
                 {"value": "k1", "seed": seed, "epoch": 9, "config_hash": f"k1-{seed}", "p": end}]
    table = pd.DataFrame(rows)
    rise = Claim(8, "t", "f", (Comparison("s", "k1", None, "rise:p", 0.02),))
    fall = Claim(8, "t", "f", (Comparison("s", "k1", None, "fall:p", 0.02),))
    rising = evaluate_claims({"s": table}, [rise])
    assert rising["verdict"].iloc[0] == "reproduced"
    assert rising["effect"].iloc[0] == pytest.approx((0.40 + 0.43 + 0.41) / 3)
    assert rising["comparison"].iloc[0] == "k1 > 0"
    assert evaluate_claims({"s": table}, [fall])["verdict"].iloc[0] == "contradicted"


def test_a_metric_the_results_do_not_hold_reads_missing():
    table = study_table({"a": [80.0, 81.0, 81.5], "b": [70.0, 71.0, 71.2]})
    claims = (Claim(98, "two metrics", "figX", (Comparison("s", "a", "b", "svm_map", 0.5),
                                                Comparison("s", "a", "b", "rise:not_recorded", 0.5))),)
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
