"""The cost model on unit costs chosen so that every term can be computed by hand."""

import dataclasses

import pytest

from study import cost
from study.trials import Trial
from trainers import svm
from trainers.config import TrialConfig

UNITS = cost.UnitCosts("hand-made", train_size=1000, test_size=200, classes=4, device="GPU",
                       step_s={"npidv2-interclr": 0.5, "npidv2": 0.5, "truncated-triplet": 0.5},
                       forward_images_per_s=100, decode_images_per_s=50, svm_s_per_class=30, kmeans_s=20)


def config(**keys) -> TrialConfig:
    base = {"method": "npidv2-interclr", "dataset": "imagefolder", "batch_size": 100, "epochs": 4, "eval_every": 2,
            "num_workers": 2, "num_negatives": 4, "clusters_per_class": 2, "min_cluster_size": 2}
    base.update(keys)
    own = TrialConfig.keys_of(base["method"])
    return TrialConfig.create(**{k: v for k, v in base.items() if k in own or k in TrialConfig.keys_of("npidv2")})


def test_every_term_of_a_decode_bound_trial():
    hours = cost.trial_hours(config(), UNITS, cpus=2)
    seconds = {term: round(value * 3600, 6) for term, value in hours.items()}
    # Loader: 2 workers x 50 images/s = 100 images/s, slower than the device's 100 forward (equal: 0.01 s an
    # image) and than 10 steps x 0.5 s = 5 s an epoch, so an epoch takes 1000 / 100 = 10 s.
    assert seconds["training"] == 4 * 10
    assert seconds["evaluations"] == 2 * (1200 / 100)  # epochs 2 and 4, a pass over 1,000 + 200 images
    assert seconds["svm"] == 4 * 30  # 4 classes, too few to start worker processes for: one after another
    assert seconds["floor"] == 1000 / 100 + 1200 / 100 + 120  # calibration, evaluation, SVMs
    many = dataclasses.replace(UNITS, classes=svm.PARALLEL_MIN_CLASSES)
    assert cost.trial_hours(config(), many, cpus=2)["svm"] * 3600 == pytest.approx(many.classes * 30 / 2)
    assert seconds["relabel"] == 20  # online labels: one k-means at the start
    assert seconds["overclustering"] == 0


def test_offline_relabelling_and_a_device_bound_epoch():
    hours = cost.trial_hours(config(label_mode="offline", offline_every=2, num_workers=20), UNITS, cpus=2)
    seconds = {term: round(value * 3600, 6) for term, value in hours.items()}
    assert seconds["training"] == 4 * 5  # 20 workers decode 1,000 images/s: the device's 10 x 0.5 s paces it
    assert seconds["relabel"] == 20 + 2 * (1000 / 100 + 20)  # the start, then epochs 2 and 4: a pass and k-means
    assert cost.paced_by(config(num_workers=20), UNITS) == "the device's steps"
    assert cost.paced_by(config(), UNITS) == "decoding on the CPUs"


def test_decoding_on_the_device_removes_the_loader_bound():
    on_cpus = cost.trial_hours(config(), UNITS, cpus=2)
    on_device = cost.trial_hours(config(decode_on_device=True), UNITS, cpus=2)
    assert on_device["training"] * 3600 == pytest.approx(4 * 5)
    assert on_cpus["training"] > on_device["training"]


def test_decoding_on_the_device_takes_its_turn_with_the_steps():
    units = dataclasses.replace(UNITS, device_decode_images_per_s=200)
    seconds = {term: value * 3600 for term, value in cost.trial_hours(config(decode_on_device=True), units,
                                                                      cpus=2).items()}
    # An epoch: 10 steps x 0.5 s, then 1,000 images decoded at 200/s on the same device: 5 + 5 s.
    assert seconds["training"] == pytest.approx(4 * (5 + 5))
    # Each evaluation: 1,200 images, each decoded (1/200 s) and passed forward (1/100 s).
    assert seconds["evaluations"] == pytest.approx(2 * 1200 * (1 / 200 + 1 / 100))


def test_the_plan_total_counts_every_trial_at_its_device_share():
    trials = [Trial("sampling", "negative_sampling", "random", seed, config(seed=seed)) for seed in range(3)]
    lines, total = cost.describe(trials, UNITS, cpus=2, device_share=0.5)
    per_trial = sum(cost.trial_hours(trials[0].config, UNITS, cpus=2).values())
    assert total == pytest.approx(3 * 0.5 * per_trial)
    assert lines[0] == "estimate (hand-made):" and "x 3" in lines[1] and "3 trials" in lines[-1]


def test_the_estimate_names_the_other_places_to_decode_image_files():
    """Decoded by the CPUs: the prepared tree and the device as alternatives; decoded on the device: the CPUs."""
    units = dataclasses.replace(UNITS, device_decode_images_per_s=200)
    trials = [Trial("sampling", "negative_sampling", "random", 0, config())]
    on_cpus = cost.describe(trials, units, cpus=2, device_share=1.0)[0][1]
    # Seconds per trial, the other terms as in test_every_term_of_a_decode_bound_trial (SVMs 120, k-means 20):
    #   CPUs:     training 4 x 10 (decode-bound), evaluations 2 x 12, floor 10 + 12 + 120: 346 s, 5.8 minutes;
    #   prepared: 2 x 50 x 2.4 = 240 images/s, so the steps' 4 x 5 pace it; the rest as above: 326 s, 5.4 minutes;
    #   device:   training 4 x (5 + 1000 / 200), evaluations 2 x 1200 x (1/100 + 1/200), floor 1000 x 0.015
    #             + 1200 x 0.015 + 120: 40 + 36 + 153 + 120 + 20 = 369 s, 6.15 minutes.
    assert "5.8 GPU-minutes per trial" in on_cpus and "paced by decoding on the CPUs" in on_cpus
    assert "; 5.4 GPU-minutes on a tree from study.prepare (decoding 2.4x faster); 6.1" in on_cpus
    assert on_cpus.endswith(" GPU-minutes with decode_on_device=true)")
    trials = [Trial("sampling", "negative_sampling", "random", 0, config(decode_on_device=True))]
    on_device = cost.describe(trials, units, cpus=2, device_share=1.0)[0][1]
    assert on_device.startswith("  npidv2-interclr: 6.1") and "paced by the device's steps and decoding" in on_device
    assert "; 5.8 GPU-minutes with decode_on_device=false (5.4 GPU-minutes on a tree from study.prepare" in on_device
    in_memory = [Trial("sampling", "negative_sampling", "random", 0, config(dataset="synthetic"))]
    assert "decode_on_device" not in cost.describe(in_memory, units, cpus=2, device_share=1.0)[0][1]
