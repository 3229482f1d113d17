"""One-vs-rest linear SVMs on frozen features, as in Goyal et al. 2019 (numpy and scikit-learn only).

Per class: the SVM cost is chosen by k-fold cross-validated average precision on the training
features, positives are weighted 2:1, and the chosen SVM is refit on all training data; the class's
score is its average precision on the test features.

Two liblinear solvers minimise the same L2-regularised squared-hinge objective (a strictly convex
problem with one minimum), so they differ only by where each stops:
- "dual": dual coordinate descent, `LinearSVC(dual=True, tol=1e-4, max_iter=2000)`, the reference
  code's own choice (fair_self_supervision_benchmark, tools/svm/train_svm_kfold.py). Fast when the
  classes are nearly separable, as 1,000 classes in 2,048 dimensions are (about 2.5x the primal's speed
  at the imagenet profile's shape: study.measure.svm_cost).
- "primal": a trust-region Newton method. Fast when many samples overlap in few dimensions, as at the
  tiny profile's 5,000 features of 64 dimensions over 10 classes, where the dual takes 3-14x longer,
  the more so the more the classes overlap.

The dual solver draws its coordinate order from liblinear's random generator, which scikit-learn
keeps as one global per process and seeds at the start of each fit. Classes therefore run in
worker processes, each fitting its classes one at a time, never in threads that would share that
generator: the result is the same for every worker count.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np

SOLVERS = ("primal", "dual")
POSITIVE_WEIGHT = 2.0
TOLERANCE = 1e-4
MAX_ITERATIONS = 2000
# The fewest classes worth spawning worker processes for: a worker takes seconds to start (it imports
# the caller's main module), which outweighs fitting the tiny and cifar profiles' 10 classes in turn.
PARALLEL_MIN_CLASSES = 100

# A worker process's training features and settings, set once by its initializer.
_worker_task: dict = {}


def best_svm(cls, x_train: np.ndarray, y_train: np.ndarray, costs, folds: int, seed: int, solver: str):
    """Class `cls` against the rest: the SVM of the cost with the best cross-validated AP, refit on all
    of the training features (n, d) float64; labels (n,)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.svm import LinearSVC

    def svm(cost: float) -> LinearSVC:
        return LinearSVC(C=cost, class_weight={1: POSITIVE_WEIGHT, 0: 1.0}, dual=solver == "dual", tol=TOLERANCE,
                         max_iter=MAX_ITERATIONS, random_state=seed)

    positive = (y_train == cls).astype(int)
    fold_indices = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x_train, positive))
    cv_ap = [cross_val_score(svm(c), x_train, positive, cv=fold_indices, scoring="average_precision").mean()
             for c in costs]
    return svm(costs[int(np.argmax(cv_ap))]).fit(x_train, positive)


def worker_count(num_classes: int, workers: int, fitted: int | None = None) -> int:
    """How many processes fit the SVMs of an evaluation over `num_classes` classes given `workers` CPUs, when
    `fitted` of those classes are fitted (all of them by default): never more processes than classes."""
    count = max(1, int(workers)) if num_classes >= PARALLEL_MIN_CLASSES else 1
    return min(count, num_classes if fitted is None else max(1, fitted))


def _start_worker(*task) -> None:
    _worker_task["task"] = task


def _worker_best_svm(cls):
    x_train, y_train, *settings = _worker_task["task"]
    return best_svm(cls, x_train, y_train, *settings)


def mean_average_precision(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                           classes, costs, folds: int, seed: int, solver: str, workers: int = 1) -> float:
    """Mean over `classes` of the test average precision, in percent; features (n, d), labels (n,).

    The training features are converted to float64 once, not by liblinear in each of the
    (costs x folds + 1) fits per class (at 2,048 features a copy per fit). With `workers` > 1 and at
    least PARALLEL_MIN_CLASSES classes in `y_train` (also when `classes` is a sample of them), the
    classes' SVMs are fitted in that many spawned processes, each holding one copy of the training
    features; the fitted SVMs come back (a weight vector each) and are scored on the test features
    here, so the test features are never copied."""
    from sklearn.metrics import average_precision_score

    if solver not in SOLVERS:
        raise ValueError(f"svm solver {solver!r} is not one of {', '.join(SOLVERS)}")
    task = (np.ascontiguousarray(x_train, dtype=np.float64), np.asarray(y_train), tuple(costs), folds, seed, solver)
    classes = list(classes)
    workers = worker_count(len(np.unique(task[1])), workers, fitted=len(classes))
    if workers <= 1:
        svms = [best_svm(cls, *task) for cls in classes]
    else:
        # spawn, not fork: a forked copy of a process running torch's thread pools can deadlock.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker, initargs=task) as pool:
            svms = list(pool.map(_worker_best_svm, classes, chunksize=max(1, len(classes) // (4 * workers))))
    x_test, y_test = np.ascontiguousarray(x_test, dtype=np.float64), np.asarray(y_test)
    precisions = [average_precision_score((y_test == cls).astype(int), svm.decision_function(x_test))
                  for cls, svm in zip(classes, svms)]
    return 100.0 * float(np.mean(precisions))
