"""What a study's plan costs, before any data or device: `python -m study.run STUDY --scale imagenet
--estimate`.

A trial's time is built from unit costs (`UnitCosts`, one per profile), term by term, following what
`trainers.fit` does:
  floor       epoch 0: batch-norm calibration (one pass over the training set), the evaluation, and
              the SVMs;
  training    per epoch the larger of the device's steps (steps x seconds per step) and the loader's
              decoding (N / (workers x images per second per worker)): the slower one sets the pace;
  evaluations the kNN evaluations after epoch 0: one pass over the training and test sets each, paced
              the same way (forward only);
  svm         the SVMs at the last epoch (one class at a time per CPU of the trial);
  relabel     global k-means at the start, and per offline relabelling a pass over the training set
              and a k-means;
  overclustering  the truncated triplet's epoch-0 pass (forward only, paced the same way).
A trial over N ranks (data_parallel, one GPU each) divides the networks' work, the decoding (each rank's
loader decodes its share of a batch, trainers.data.RankShare) and the negative samplers N ways; the part of
a step that every rank repeats for the whole batch (`replicated_step_s`: augmentation, the bank's and
queue's upkeep, the losses) does not divide, rank 0 fits the SVMs on all the trial's CPUs, and the
collectives (the gradients' all-reduce, the gathers, the batch norms' sums) are not priced.
A trial holds its device share for all of it, so its device-hours are its hours x its share. The unit
costs of the GPU profiles are declared, not measured (no GPU was available to measure them): each
names its source, and the output says "declared". The largest terms are named, so a reader sees where
the hours go.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from study.prepare import PREPARED_DECODE_SPEEDUP
from trainers.config import TrialConfig
from trainers.svm import worker_count


@dataclass(frozen=True)
class UnitCosts:
    source: str  # where the numbers come from, printed with every estimate
    train_size: int
    test_size: int
    classes: int
    step_s: dict  # seconds per training step, per method, on the profile's device
    forward_images_per_s: float  # the device's forward-only throughput (evaluation, relabelling)
    decode_images_per_s: float  # images decoded and resized per second per loader worker (one CPU)
    svm_s_per_class: float  # one class's SVMs (5 costs x 3 folds + the refit) on one CPU
    kmeans_s: float  # one global k-means of the training set into the profile's clusters
    device: str = "GPU"
    # Images the device itself decodes per second with decode_on_device=true, in the trial's own process, so in
    # turn with its steps (inf: free, as for data held in memory).
    device_decode_images_per_s: float = float("inf")
    # Per method, the seconds of step_s that every rank of a trial over several repeats for the whole batch.
    replicated_step_s: dict = field(default_factory=dict)


def trial_hours(config: TrialConfig, costs: UnitCosts, cpus: float, decode_speedup: float = 1.0) -> dict[str, float]:
    """Hours per term of one trial (see the module's notes). With config.decode_on_device the loader hands
    encoded images to the device, which decodes every image before its step or forward pass, at
    costs.device_decode_images_per_s, and no loader paces it. `decode_speedup`: the loader workers' rate
    times this (a tree from study.prepare)."""
    n, n_test, ranks = costs.train_size, costs.test_size, config.data_parallel
    per_image_decode, device_decode = decoding_per_image(config, costs, decode_speedup)

    def pass_seconds(images: int) -> float:
        """One forward-only pass: the devices' pace (their decoding included) or the loaders', whichever is slower."""
        return images * max(1 / (ranks * costs.forward_images_per_s) + device_decode, per_image_decode)

    epoch = max((n // config.batch_size) * step_seconds(config, costs) + n * device_decode, n * per_image_decode)
    evaluated = [e for e in range(1, config.epochs + 1) if e % config.eval_every == 0 or e == config.epochs]
    clusters = "clusters_per_class" in TrialConfig.keys_of(config.method)
    offline = clusters and config.label_mode == "offline"
    relabels = sum(1 for e in range(1, config.epochs + 1) if offline and e % config.offline_every == 0)
    svm = costs.classes * costs.svm_s_per_class / worker_count(costs.classes, cpus)
    seconds = {
        "floor": pass_seconds(n) + pass_seconds(n + n_test) + svm,
        "training": config.epochs * epoch,
        "evaluations": len(evaluated) * pass_seconds(n + n_test),
        "svm": svm,
        "relabel": (costs.kmeans_s if clusters else 0.0) + relabels * (pass_seconds(n) + costs.kmeans_s),
        "overclustering": pass_seconds(n) if config.method == "truncated-triplet" else 0.0,
    }
    return {term: value / 3600 for term, value in seconds.items()}


def decoding_per_image(config: TrialConfig, costs: UnitCosts, decode_speedup: float = 1.0) -> tuple[float, float]:
    """Seconds per image of the whole trial that decoding takes (loaders', devices'): the loaders' run beside
    the devices' work, the devices' in turn with it. N ranks' loaders, or N devices, decode a share each."""
    ranks = config.data_parallel
    if config.decode_on_device:
        return 0.0, 1 / (ranks * costs.device_decode_images_per_s)
    if not config.num_workers:
        return 0.0, 0.0
    return 1 / (ranks * config.num_workers * costs.decode_images_per_s * decode_speedup), 0.0


def step_seconds(config: TrialConfig, costs: UnitCosts) -> float:
    """A training step's seconds over the trial's ranks: the networks' share divides, the replicated part not."""
    replicated = costs.replicated_step_s.get(config.method, 0.0)
    return (costs.step_s[config.method] - replicated) / config.data_parallel + replicated


def paced_by(config: TrialConfig, costs: UnitCosts) -> str:
    """Which side sets the pace of a training epoch: the device's steps (and decoding) or the loader's decoding."""
    if config.decode_on_device:
        return "the device's steps and decoding"
    device = (costs.train_size // config.batch_size) * step_seconds(config, costs)
    loader = costs.train_size * decoding_per_image(config, costs)[0]
    return "decoding on the CPUs" if loader > device else "the device's steps"


def duration(hours: float, device: str | None) -> str:
    """Device-hours (or, for device None, hours) in words, in minutes below an hour."""
    unit = f"{device}-" if device else ""
    return f"{hours * 60:.1f} {unit}minutes" if hours < 1 else f"{hours:.1f} {unit}hours"


def describe(trials: list, costs: UnitCosts, cpus: float, device_share: float) -> tuple[list[str], float]:
    """The plan's estimate in lines (per method: one trial's device-hours, its largest terms, what paces its
    epochs, and for image files the other places to decode them: the device, the CPUs, a prepared tree; then
    the plan's total), and the total in device-hours."""
    share = device_share if device_share > 0 else 1.0
    lines = [f"estimate ({costs.source}):"]
    total = 0.0
    by_method: dict[str, list] = {}
    for trial in trials:
        by_method.setdefault(trial.config.method, []).append(trial)
    for method, group in by_method.items():
        config = group[0].config
        hours = trial_hours(config, costs, cpus)
        per_trial = sum(hours.values()) * share
        total += per_trial * len(group)
        largest = sorted(hours.items(), key=lambda item: -item[1])[:3]
        text = (f"  {method}: {duration(per_trial, costs.device)} per trial x {len(group)} (largest: "
                f"{', '.join(f'{term} {value * share:.2g} h' for term, value in largest)}; epochs paced by "
                f"{paced_by(config, costs)}")
        if config.data_parallel > 1:
            replicated = (f"{costs.replicated_step_s[method] * 1000:.0f} ms a step repeated on every rank"
                          if method in costs.replicated_step_s else
                          "no part of a step every rank repeats declared for this profile (the whole step divided)")
            text += (f"; over {config.data_parallel} ranks, {duration(sum(hours.values()), None)} of wall time: "
                     f"networks, decoding and samplers divided, {replicated}, collectives not priced")
        if config.dataset == "imagefolder" and config.num_workers and costs.decode_images_per_s != float("inf"):
            def hours_of(on_device: bool, speedup: float = 1.0) -> str:
                changed = config.replace(decode_on_device=on_device)
                return duration(sum(trial_hours(changed, costs, cpus, speedup).values()) * share, costs.device)

            prepared = (f"{hours_of(False, PREPARED_DECODE_SPEEDUP)} on a tree from study.prepare (decoding "
                        f"{PREPARED_DECODE_SPEEDUP:g}x faster)")
            text += (f"; {hours_of(False)} with decode_on_device=false ({prepared})" if config.decode_on_device
                     else f"; {prepared}; {hours_of(True)} with decode_on_device=true")
        lines.append(text + ")")
    days = f" ({total / 24:.1f} {costs.device}-days)" if total >= 24 else ""
    lines.append(f"  the plan: {len(trials)} trials, {duration(total, costs.device)}{days}")
    return lines, total
