"""Time per training iteration, intra only (lambda = 1) against intra + inter (lambda = 0.75, semi-hard).

`python -m study.benchmark [--scale tiny] [--rounds 5] [--steps 20] [--set KEY=VALUE ...]`

Both variants are built in one process on the same data and device; rounds alternate between
them (A B A B ...) so drift in the machine's speed hits both alike. A step is the whole training
iteration: augmentation, forward, both branches' sampling and loss, backward, optimiser step, and
the memory-bank write with online relabelling. Prints the median per-step time of each and the
ratio, per round and overall. The paper's Table 4 implies about 1.9x (5 days vs 2.6).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from study.profiles import PROFILES
from trainers import data as datasets
from trainers.config import ConfigError, TrialConfig, parse_assignment
from trainers.evaluate import extract
from trainers.fit import resolve_device
from trainers.methods.registry import METHODS

VARIANTS = {"intra (lambda=1)": {"loss_lambda": 1.0},
            "intra+inter (lambda=0.75, semi-hard)": {"loss_lambda": 0.75, "negative_sampling": "semi-hard"}}


def build(config: TrialConfig, data, device):
    torch.manual_seed(config.seed)
    method = METHODS[config.method](config, data, device)
    _, embeddings = extract(method.encoder, data.train, config.image_size, data.mean, data.std, device)
    generator = torch.Generator(device).manual_seed(config.seed)
    method.start(embeddings, generator)
    optimizer = torch.optim.SGD(method.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    return method, optimizer, generator


def timed_steps(method, optimizer, generator, batches, device, start: int) -> list[float]:
    seconds = []
    for offset, (images, _, indices) in enumerate(batches):
        images, indices = images.to(device), indices.to(device)
        started = time.perf_counter()
        loss, _ = method.training_step(images, None, indices, start + offset, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="tiny", choices=list(PROFILES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="iterations per variant per round")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        base = PROFILES[args.scale].config(**dict(parse_assignment(t) for t in args.set))
        device = resolve_device(base.device)
        data = datasets.load(base)
    except (ConfigError, datasets.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(base.threads)
    runs = {name: build(base.replace(**changes), data, device) for name, changes in VARIANTS.items()}
    order = torch.Generator().manual_seed(0)
    batches = list(datasets.batches(data.train, base.batch_size, shuffle=True, generator=order))
    per_round: dict[str, list[float]] = {name: [] for name in VARIANTS}
    warmup = 3
    for name, run in runs.items():
        timed_steps(*run, batches[:warmup], device, start=0)
    for round_index in range(args.rounds):
        for name, run in runs.items():
            chunk = [batches[(round_index * args.steps + i) % len(batches)] for i in range(args.steps)]
            per_round[name].append(statistics.median(timed_steps(*run, chunk, device, start=warmup)))
    names = list(VARIANTS)
    ratios = [b / a for a, b in zip(per_round[names[0]], per_round[names[1]])]
    print(f"device {device}, threads {base.threads}, batch {base.batch_size}, bank {len(data.train)}, "
          f"K {base.num_negatives}, {args.rounds} rounds x {args.steps} steps per variant")
    for name in names:
        print(f"  {name:<38} median step {statistics.median(per_round[name]) * 1000:7.1f} ms  "
              f"(rounds: {', '.join(f'{s * 1000:.1f}' for s in per_round[name])})")
    print(f"  ratio intra+inter / intra: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); paper Table 4 implies 1.92")
    return 0


if __name__ == "__main__":
    sys.exit(main())
