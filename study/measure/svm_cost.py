"""Seconds of the SVM evaluation per class at a scale's shape, and the projection for all its classes:
`python -m study.measure.svm_cost [--classes 1000] [--dim 2048] [--train 5000] [--test 10000] [--sample 8]
[--workers 1 2] [--solvers primal dual]`.

The features are synthetic (a Gaussian per class around a random centre, L2-normalised, as the
evaluation's are); the SVMs' work depends on the sizes and on how separable the classes are, so the
time is the protocol's at that shape and that separability, which the printed mAP shows (the
defaults: the imagenet profile's 5,000 SVM training features of 2,048 dimensions over 1,000 classes).
`sample` classes are fitted per solver and worker count, and the projection for all classes is
classes / sample x their seconds. Wall-clock time of this machine: quote it with the CPU model.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from study.cli import OneLineParser
from trainers.evaluate import svm_map
from trainers.svm import SOLVERS, worker_count


def synthetic_features(classes: int, dim: int, size: int, spread: float, generator: torch.Generator):
    labels = torch.arange(size) % classes
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0))
    return F.normalize(centres[labels] + spread * torch.randn(size, dim, generator=generator), dim=1), labels


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m study.measure.svm_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--train", type=int, default=5000, help="SVM training features (svm_train_size)")
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--sample", type=int, default=8, help="classes actually fitted per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--solvers", nargs="+", choices=SOLVERS, default=list(SOLVERS),
                        help="liblinear's solvers to time (the trial key svm_solver)")
    parser.add_argument("--spread", type=float, default=3.0,
                        help="noise around each class centre: larger is harder (the printed mAP says how hard)")
    args = parser.parse_args(argv)
    if min(args.classes, args.dim, args.train, args.test, args.sample, *args.workers) < 1 or args.sample > args.classes:
        print("error: every count must be >= 1 and --sample at most --classes", file=sys.stderr)
        return 2
    generator = torch.Generator().manual_seed(1)
    train, train_labels = synthetic_features(args.classes, args.dim, args.train, args.spread, generator)
    test, test_labels = synthetic_features(args.classes, args.dim, args.test, args.spread, generator)
    sample = np.arange(args.sample)
    print(f"{args.train} training x {args.dim} features, {args.classes} classes; fitting {args.sample} of them; "
          f"{os.cpu_count()} CPUs visible")
    for solver, workers in ((solver, workers) for solver in args.solvers for workers in args.workers):
        started = time.perf_counter()
        mean_ap = svm_map(train, train_labels, test, test_labels, workers=workers, classes=sample, solver=solver)
        seconds = time.perf_counter() - started
        used = worker_count(args.classes, workers, fitted=args.sample)
        print(f"  {solver}, {used} worker(s): {seconds / args.sample:.2f} s per class (wall / classes), "
              f"all {args.classes} classes in {seconds / args.sample * args.classes / 60:.1f} min; "
              f"mAP of the fitted classes {mean_ap:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
