"""The positive control's effect table against hand computations on a constructed search table."""

import math

import pandas as pd
import pytest

from study.measure.positive_control import config_hash, effects_table, trial_keys


def test_paired_effect_and_interval_by_hand():
    rows = []
    for seed, (base, inter) in enumerate([(70.0, 71.0), (71.0, 73.0), (72.0, 72.0)]):  # scale "tiny"
        for arm, knn in (("base", base), ("inter", inter)):
            rows.append({"scale": "tiny", "arm": arm, "seed": seed, "seconds": 10.0, "knn_top1": knn,
                         "linear_top1": 80.0, "svm_map": 85.0, "knn_top1_gain": knn - 60.0, "linear_top1_gain": 5.0,
                         "svm_map_gain": 6.0, "loss_inter_to_chance": 0.5 if arm == "inter" else math.nan,
                         "inter_positives_same_class": 0.7, "inter_negatives_same_class": 0.1,
                         "label_purity": 0.6, "label_nmi": 0.5})
    effects = effects_table(pd.DataFrame(rows))
    knn = effects[(effects["metric"] == "knn_top1") & (effects["comparison"] == "inter - base")].iloc[0]
    # differences 1, 2, 0: mean 1, SD 1, half-width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321
    assert knn["effect"] == pytest.approx(1.0) and knn["sd_of_difference"] == pytest.approx(1.0)
    assert knn["ci_high"] - knn["effect"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert knn["ci_low"] == pytest.approx(1 - 4.302653 / math.sqrt(3), rel=1e-5)  # what decides a scale's pass
    assert knn["trained_gain"] == pytest.approx((71 + 73 + 72) / 3 - 60.0)
    assert knn["loss_inter_to_chance"] == 0.5  # the inter arm's health, not the base's
    assert knn["positives_over_neighbours"] == pytest.approx(0.7 / 0.71)  # base kNN 70, 71, 72 -> 0.71
    assert effects["comparison"].unique().tolist() == ["inter - base"]  # no lambda-1 arm, no such comparison


def test_arms_follow_the_lambda_protocol_and_keep_only_their_methods_keys():
    inter = trial_keys("n20k-e16", "inter", 3, {})
    assert (inter["loss_lambda"], inter["negative_sampling"], inter["inter_margin"], inter["seed"]) == \
        (0.75, "random", 0.0, 3)
    assert inter["train_subset"] == 20000 and inter["num_negatives"] == 64
    base = trial_keys("n20k-e16", "base", 3, {})
    assert base["method"] == "npidv2" and "clusters_per_class" not in base and "loss_lambda" not in base


def test_a_trial_two_scales_share_is_one_trial():
    # NPIDv2 has no cluster keys, so the base arms of n20k-e16 and n20k-e16-c1 are one configuration
    assert config_hash(trial_keys("n20k-e16", "base", 0, {})) == config_hash(trial_keys("n20k-e16-c1", "base", 0, {}))
    assert config_hash(trial_keys("n20k-e16", "inter", 0, {})) != config_hash(trial_keys("n20k-e16-c1", "inter", 0, {}))
    assert config_hash(trial_keys("n20k-e16", "inter", 0, {})) != config_hash(trial_keys("n20k-e16", "inter", 1, {}))


def test_report_names_a_scale_as_passing_only_when_knn_and_linear_intervals_clear_zero(tmp_path):
    from analysis.report import positive_control

    rows = []
    for scale, knn_low, linear_low in (("clears", 0.1, 0.2), ("half", 0.3, -0.1)):
        for metric, low in (("knn_top1", knn_low), ("linear_top1", linear_low), ("svm_map", 1.0)):
            rows.append({"scale": scale, "settings": "x=1", "comparison": "inter - base", "metric": metric, "seeds": 5,
                         "effect": low + 0.5, "ci_low": low, "ci_high": low + 1.0, "trained_gain": 5.0,
                         "loss_inter_to_chance": 0.4, "positives_over_neighbours": 0.8, "seconds_per_trial": 300.0})
    pd.DataFrame(rows).to_csv(tmp_path / "effects.csv", index=False)
    text = "\n".join(positive_control(tmp_path))
    assert "Passing: clears." in text
    assert text.count("| half |") == 2 and "svm_map" not in text  # kNN and linear rows only
    assert "Follow-up" not in text
    assert positive_control(tmp_path / "absent") == []

    # A follow-up with more seeds is its own table with its own passing line, never merged into the search's.
    (tmp_path / "follow-up").mkdir()
    follow_up = pd.DataFrame(rows)
    follow_up.loc[follow_up["scale"] == "half", "ci_low"] = 0.05
    follow_up.to_csv(tmp_path / "follow-up" / "effects.csv", index=False)
    text = "\n".join(positive_control(tmp_path))
    assert "Passing: clears." in text and "Passing at these seeds: clears, half." in text
    assert text.count("| half |") == 4
