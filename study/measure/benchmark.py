"""Cost of a training step per method, and where it goes: `python -m study.measure.benchmark [--scale tiny]
[--rounds 5] [--steps 20] [--layouts] [--set KEY=VALUE ...]`.

Three variants run in one process on the same data and device: intra only (NPIDv2), intra + inter
(NPIDv2-InterCLR, semi-hard, online labels) and the truncated triplet (median deputy). Rounds
interleave them step by step (A B C A B C ...) so drift in the machine's speed hits all alike. Each
variant is a `trainers.trial.Trial` started as `fit` starts it (batch norm calibrated, the floor
measured), and a step is its `Trial.step`, the iteration `fit` runs: augmentation, forward, sampling
and losses, backward, optimiser and learning-rate step, momentum updates and the memory-bank write
with online relabelling. Printed: the median step time
and images/s of each, the inter/intra ratio per round (the paper's Table 4 implies about 1.9x), the
split of an intra + inter step into the inter branch's samplers, its bank write and relabelling,
and the rest (augmentation, networks, optimiser) from a profile of extra steps, with the share of the
samplers' B x N similarity product (work any sampler of the paper's pools does), the milliseconds the
branch adds against those a ratio of 1.2 would leave it, the time of one
full evaluation (the floor's: kNN, SVM mAP, linear probe), and the peak memory. On a GPU the step times come from
CUDA events. With a GPU profile on a machine without its data, give e.g. `--set dataset=synthetic
--set image_size=16` to time the code path at toy size. `--layouts` also runs each variant with its
networks in NCHW layout, interleaved with the channels-last ones `trainers.networks.build_encoder` makes,
and prints each variant's NCHW / channels-last step ratio.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from study.cli import OneLineParser
from study.profiles import PROFILES
from trainers import data as datasets
from trainers.config import ConfigError, TrialConfig, parse_assignment
from trainers.fit import StepTimer
from trainers.trial import Trial, resolve_device

VARIANTS = {"intra (NPIDv2)": {"method": "npidv2"},
            "intra+inter (NPIDv2-InterCLR, semi-hard)": {"method": "npidv2-interclr", "negative_sampling": "semi-hard"},
            "truncated triplet (median deputy)": {"method": "truncated-triplet", "deputy": "median"}}
PARTS = ("samplers", "bank and labels")  # the record_function labels of trainers.inter_image
SIMILARITY = "similarity product"  # trainers.samplers' label of the B x N product, a part of "samplers"
NCHW = " [NCHW]"  # suffix of a variant's name run with its networks in NCHW layout (--layouts)


def run_steps(trial: Trial, batches, start: int) -> list[float]:
    """Each step's seconds: `Trial.step`, the iteration `trainers.fit` runs."""
    seconds = []
    for offset, (images, labels, indices) in enumerate(batches):
        timer = StepTimer(trial.device)
        timer.start()
        trial.step(images, labels, indices, start + offset)
        timer.stop()
        seconds.append(timer.seconds())
    return seconds


def step_split(trial: Trial, batches) -> tuple[dict[str, float], float]:
    """Share of an intra + inter step's time in each labelled part, from a profile of the given steps, and
    the share of the similarity product, which is a part of the samplers'."""
    device = trial.device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        started = time.perf_counter()
        run_steps(trial, batches, start=1000)
        total = time.perf_counter() - started
    timed = {event.key: event for event in profiler.key_averages()}
    use_device = device.type == "cuda"
    split = {part: ((timed[part].device_time_total if use_device else timed[part].cpu_time_total) / 1e6 / total
                    if part in timed else 0.0) for part in PARTS + (SIMILARITY,)}
    similarity = split.pop(SIMILARITY)
    return {**split, "rest (augmentation, networks, optimiser)": 1 - sum(split.values())}, similarity


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m study.measure.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="tiny", choices=list(PROFILES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="iterations per variant per round")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--layouts", action="store_true",
                        help="also time each variant with NCHW networks, against the channels-last ones trials build")
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_assignment(t) for t in args.set)
        scale_profile = PROFILES[args.scale]
        # A --set applies to the variants whose method has the key.
        configs = {name: scale_profile.config(**{**{k: v for k, v in overrides.items()
                                               if k in TrialConfig.keys_of(changes["method"])}, **changes})
                   for name, changes in VARIANTS.items()}
        base = next(iter(configs.values()))
        device = resolve_device(base.device)
        data = datasets.load(base)
        for config in configs.values():
            config.check_against_data(len(data.train), data.num_classes)
    except (ConfigError, datasets.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(base.threads)
    # Each variant starts as fit starts it: batch norm calibrated, the floor measured, the method started.
    trials = {name: Trial(config, data) for name, config in configs.items()}
    if args.layouts:
        for name, config in configs.items():
            trials[name + NCHW] = trial = Trial(config, data)
            for network in trial.method.network_modules():
                network.to(memory_format=torch.contiguous_format)
    floors = {name: trial.start() for name, trial in trials.items()}
    order = torch.Generator().manual_seed(0)
    batches = list(datasets.batches(data.train, base.batch_size, shuffle=True, generator=order))
    per_round: dict[str, list[float]] = {name: [] for name in trials}
    warmup = 3
    for trial in trials.values():
        run_steps(trial, batches[:warmup], start=0)
    for round_index in range(args.rounds):
        chunk = [batches[(round_index * args.steps + i) % len(batches)] for i in range(args.steps)]
        seconds = {name: [] for name in trials}
        # Step by step in turn (A B C A B C ...): a shared machine's speed drifts over seconds, and
        # interleaving single steps lets that drift hit every variant alike.
        for offset, batch in enumerate(chunk):
            for name, trial in trials.items():
                seconds[name] += run_steps(trial, [batch], start=warmup + offset)
        for name in trials:
            per_round[name].append(statistics.median(seconds[name]))
    intra, inter = list(VARIANTS)[:2]
    ratios = [b / a for a, b in zip(per_round[intra], per_round[inter])]
    split, similarity = step_split(trials[inter], batches[:args.steps])
    evaluation = floors[inter]
    medians = {name: statistics.median(rounds) for name, rounds in per_round.items()}

    print(f"device {device}, threads {base.threads}, batch {base.batch_size}, bank {len(data.train)}, "
          f"K {configs[inter].num_negatives}, {args.rounds} rounds x {args.steps} steps per variant")
    for name, median in medians.items():
        print(f"  {name:<51} median step {median * 1000:7.1f} ms, {base.batch_size / median:7.0f} images/s  "
              f"(rounds: {', '.join(f'{s * 1000:.1f}' for s in per_round[name])})")
    if args.layouts:
        for name in VARIANTS:
            ratios_nchw = [b / a for a, b in zip(per_round[name], per_round[name + NCHW])]
            print(f"  NCHW / channels-last step, {name}: median {statistics.median(ratios_nchw):.3f} "
                  f"(min {min(ratios_nchw):.3f}, max {max(ratios_nchw):.3f}); one evaluation "
                  f"{floors[name + NCHW]['eval_time_s']:.1f} s against {floors[name]['eval_time_s']:.1f} s")
    print(f"  ratio intra+inter / intra: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); paper Table 4 implies 1.92")
    print("  intra+inter step split: " + ", ".join(f"{part} {share:.0%}" for part, share in split.items())
          + f"; the samplers' similarity product (B x N, no implementation avoids it) {similarity:.0%}")
    print(f"  the inter branch adds {(medians[inter] - medians[intra]) * 1000:.1f} ms a step; a ratio of 1.2 "
          f"leaves it {0.2 * medians[intra] * 1000:.1f} ms")
    print(f"  one full evaluation (kNN and a {evaluation['probe_epochs']}-epoch linear probe on "
          f"{evaluation['eval_train_size']} + {evaluation['eval_test_size']} images, SVM mAP from "
          f"{evaluation['svm_train_size']} of them): {evaluation['eval_time_s']:.1f} s")
    print(f"  peak memory: {trials[inter].peak_memory_mb():.0f} MB ({'GPU tensors' if device.type == 'cuda' else 'process RSS'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
