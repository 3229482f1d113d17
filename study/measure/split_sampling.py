"""Seconds of the inter branch's negative sampling per step, in one process and on each rank of a trial over
several, where each rank samples its share of the queries: `python -m study.measure.split_sampling [--bank
50000] [--batch 256] [--negatives 64] [--strategy semi-hard] [--ranks 2] [--steps 10]`.

The bank and queries are random unit vectors and the labels random clusters (the sampling's work does not
depend on what the features mean). One process runs `InterImageBranch.negatives` on the whole batch; then
`--ranks` gloo processes on this machine (trainers.distributed) each run it on their share, gathering the
negatives. Printed: the median seconds of a step in each, and whether every rank's negatives were one
process's. On a CPU the ranks share the machine's cores: give each a core (`--ranks` at most the cores).
Wall-clock time of this machine: quote it with the CPU model.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from study.cli import OneLineParser
from study.profiles import PROFILES
from trainers.distributed import follow, lead
from trainers.inter_image import InterImageBranch
from trainers.memory_bank import MemoryBank
from trainers.samplers import NEGATIVE_SAMPLING, Clusters

CLUSTERS = 100


def timed_sampling(ranks, bank_size: int, batch: int, negatives: int, strategy: str, steps: int) -> tuple:
    """(median seconds of a step's sampling, the last step's B x K negatives) on this process."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(bank_size, 128, generator=generator), dim=1)
    labels = torch.randint(0, CLUSTERS, (bank_size,), generator=generator)
    settings = PROFILES["tiny"].config(method="npidv2-interclr", negative_sampling=strategy,
                                       num_negatives=negatives).settings
    branch = InterImageBranch(settings, MemoryBank(features, settings.bank_momentum), CLUSTERS, seed=0, threads=1,
                              truth=labels, ranks=ranks)
    draws = torch.Generator().manual_seed(1)
    seconds, drawn = [], None
    for step in range(steps + 1):  # the first step warms up
        indices = torch.randint(0, bank_size, (batch,), generator=generator)
        clusters = Clusters(labels, CLUSTERS)
        if ranks is not None:
            dist.barrier()
        started = time.perf_counter()
        drawn = branch.negatives(features[indices], labels[indices], clusters, draws)
        if step:
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), drawn


def on_every_rank(ranks, args) -> list:
    result = timed_sampling(ranks, args.bank, args.batch, args.negatives, args.strategy, args.steps)
    everyone = [None] * ranks.world
    dist.all_gather_object(everyone, result)
    return everyone


def follow_measure(rank: int, world: int, port: int, args) -> None:
    follow(rank, world, port, "cpu", lambda ranks: on_every_rank(ranks, args))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m study.measure.split_sampling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", type=int, default=50000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--negatives", type=int, default=64)
    parser.add_argument("--strategy", default="semi-hard", choices=NEGATIVE_SAMPLING)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    if not (2 <= args.ranks <= args.batch and args.steps >= 1 and args.bank >= 10 * CLUSTERS):
        print(f"error: need 2 <= --ranks <= --batch, --steps >= 1 and --bank >= {10 * CLUSTERS}", file=sys.stderr)
        return 2
    alone, expected = timed_sampling(None, args.bank, args.batch, args.negatives, args.strategy, args.steps)
    per_rank = lead(args.ranks, "cpu", follow_measure, (args,), lambda ranks: on_every_rank(ranks, args))
    print(f"negative sampling, {args.strategy}: bank {args.bank}, batch {args.batch}, K {args.negatives}, "
          f"one thread per process, median of {args.steps} steps")
    print(f"  one process, the whole batch: {alone * 1000:.1f} ms a step")
    for rank, (seconds, drawn) in enumerate(per_rank):
        same = "the same negatives" if torch.equal(drawn, expected) else "OTHER negatives than one process"
        print(f"  rank {rank} of {args.ranks}, its share and the gather: {seconds * 1000:.1f} ms a step "
              f"({alone / seconds:.2f}x), {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
