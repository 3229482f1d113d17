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


def test_the_last_epoch_is_evaluated_even_off_the_schedule():
    seconds = cost.trial_hours(config(epochs=5), UNITS, cpus=2)["evaluations"] * 3600
    assert seconds == pytest.approx(3 * (1200 / 100))  # epochs 2, 4 and the last, 5


def test_a_partial_last_batch_is_not_a_step():
    # 1,000 images in batches of 300: 3 steps (the loader drops the last 100) x 0.5 s, slower than 20 workers'
    # 1,000 / 1,000 s, so 1.5 s an epoch.
    hours = cost.trial_hours(config(batch_size=300, num_workers=20), UNITS, cpus=2)
    assert hours["training"] * 3600 == pytest.approx(4 * 1.5)


def test_offline_labels_are_priced_only_on_the_epochs_that_relabel():
    hours = cost.trial_hours(config(label_mode="offline", offline_every=3), UNITS, cpus=2)
    # The start's k-means, then epoch 3 alone of 4: a decode-bound pass of 1,000 / 100 s and a k-means.
    assert hours["relabel"] * 3600 == pytest.approx(20 + (1000 / 100 + 20))


def test_the_truncated_triplet_pays_its_overclustering_pass_and_no_k_means():
    triplet = TrialConfig.create(method="truncated-triplet", dataset="imagefolder", batch_size=100, epochs=4,
                                 eval_every=2, num_workers=2)
    hours = cost.trial_hours(triplet, UNITS, cpus=2)
    assert hours["overclustering"] * 3600 == pytest.approx(1000 / 100)  # one decode-bound pass at epoch 0
    assert hours["relabel"] == 0


def test_the_largest_terms_are_given_at_the_device_share():
    trials = [Trial("sampling", "negative_sampling", "random", 0, config())]
    line = cost.describe(trials, UNITS, cpus=2, device_share=0.5)[0][1]
    # floor 142 s, SVMs 120 s, training 40 s (as in test_every_term_of_a_decode_bound_trial), each x 0.5
    assert "(largest: floor 0.02 h, svm 0.017 h, training 0.0056 h;" in line


def test_a_plan_of_more_than_a_day_is_also_given_in_days():
    trials = [Trial("sampling", "negative_sampling", "random", seed, config(seed=seed)) for seed in range(3)]
    # Per trial 106 s besides the SVMs, which run twice (epoch 0 and the last); 3 trials at half a GPU each.
    # SVMs of 30 minutes a class: 2 x 4 x 0.5 h + 106 s = 4.03 h a trial, 6.04 GPU-hours in all.
    slow_svms = dataclasses.replace(UNITS, svm_s_per_class=30 * 60)
    assert cost.describe(trials, slow_svms, cpus=2, device_share=0.5)[0][-1] == "  the plan: 3 trials, 6.0 GPU-hours"
    # 30 hours a class: 240.03 h a trial, 360.04 GPU-hours in all, 15.0 GPU-days.
    slow_svms = dataclasses.replace(UNITS, svm_s_per_class=30 * 3600)
    assert cost.describe(trials, slow_svms, cpus=2, device_share=0.5)[0][-1] == \
        "  the plan: 3 trials, 360.0 GPU-hours (15.0 GPU-days)"


def test_every_profile_prices_every_method_on_its_own_data():
    from study.profiles import PROFILES
    from trainers.methods.registry import METHODS

    # (train, test, classes): tiny's 5,000-image training subset and Fashion-MNIST's whole test split,
    # CIFAR-10, ImageNet-1k (ILSVRC-2012's train and val).
    sizes = {"tiny": (5000, 10000, 10), "cifar": (50000, 10000, 10), "imagenet": (1281167, 50000, 1000)}
    assert {name: (p.costs.train_size, p.costs.test_size, p.costs.classes) for name, p in PROFILES.items()} == sizes
    for profile in PROFILES.values():
        assert set(profile.costs.step_s) == set(METHODS), profile.name
        for base in ("npidv2", "mocov2", "byol"):  # the inter branch only adds work to a step
            assert profile.costs.step_s[f"{base}-interclr"] > profile.costs.step_s[base], (profile.name, base)
        for method, replicated in profile.costs.replicated_step_s.items():  # a part of the step, no more
            assert 0 <= replicated < profile.costs.step_s[method], (profile.name, method)


def test_a_trial_over_two_ranks_divides_the_networks_and_the_decoding_but_not_the_replicated_step():
    units = dataclasses.replace(UNITS, replicated_step_s={"npidv2-interclr": 0.1})
    seconds = {term: value * 3600 for term, value in
               cost.trial_hours(config(data_parallel=2), units, cpus=4).items()}
    # A step: (0.5 - 0.1) / 2 + 0.1 = 0.3 s, 10 a epoch: 3 s; two ranks' 2 workers x 50 images/s decode 1,000
    # images in 5 s, which paces the epoch.
    assert seconds["training"] == pytest.approx(4 * 5)
    # A pass: 1,200 images forward on two devices (200/s) and decoded by four workers (200/s): 6 s.
    assert seconds["evaluations"] == pytest.approx(2 * 6)
    assert seconds["floor"] == pytest.approx(1000 / 200 + 6 + 4 * 30)  # the 4 SVM classes one after another
    assert seconds["relabel"] == pytest.approx(20)  # k-means on rank 0 alone, as with one
    device_bound = cost.trial_hours(config(data_parallel=2, num_workers=20), units, cpus=4)
    assert device_bound["training"] * 3600 == pytest.approx(4 * 3)
    assert cost.paced_by(config(data_parallel=2, num_workers=20), units) == "the device's steps"
    # Rank 0 fits the SVMs on all the trial's CPUs, the other ranks' too.
    many = dataclasses.replace(units, classes=svm.PARALLEL_MIN_CLASSES)
    assert cost.trial_hours(config(data_parallel=2), many, cpus=8)["svm"] * 3600 == pytest.approx(many.classes * 30 / 8)
    trials = [Trial("sampling", "negative_sampling", "random", 0, config(data_parallel=2))]
    line = cost.describe(trials, units, cpus=4, device_share=2)[0][1]
    # Wall time: training 20 s, evaluations 12, floor 131, SVMs 120, k-means 20: 303 s; at 2 GPUs, 10.1 GPU-minutes.
    assert line.startswith("  npidv2-interclr: 10.1 GPU-minutes per trial")
    assert (f"over 2 ranks, {303 / 60:.1f} minutes of wall time: networks, decoding and samplers divided, 100 ms a "
            f"step repeated") in line
    undeclared = cost.describe(trials, UNITS, cpus=4, device_share=2)[0][1]
    assert "no part of a step every rank repeats declared for this profile (the whole step divided)" in undeclared
