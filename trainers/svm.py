"""One-vs-rest linear SVMs on frozen features, as in Goyal et al. 2019 (numpy and scikit-learn only).

Per class: the SVM cost is chosen by k-fold cross-validated average precision on the training
features, positives are weighted 2:1, and the chosen SVM is refit on all training data; the class's
score is its average precision on the test features.

Two liblinear solvers minimise the same L2-regularised squared-hinge objective (a strictly convex
problem with one minimum), so they differ only by where each stops:
- "dual": dual coordinate descent, `LinearSVC(dual=True, tol=1e-4, max_iter=2000)`, the reference
  code's own choice (fair_self_supervision_benchmark, tools/svm/train_svm_kfold.py). Fast when the
  classes are nearly separable, as 1,000 classes in 2,048 dimensions are (3x the primal's speed at the
  imagenet profile's shape: study.measure.svm_cost).
- "primal": a trust-region Newton method. Fast when many samples overlap in few dimensions, as at the
  tiny profile's 5,000 features of 64 dimensions over 10 classes, where the dual takes 6-11x longer.

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

# The arrays of one mean_average_precision call: set in the calling process, or once per worker process.
_shared: dict = {}


def _share(x_train, y_train, x_test, y_test, costs, folds, seed, solver) -> None:
    from sklearn.model_selection import StratifiedKFold
    _shared.update(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, costs=costs, seed=seed,
                   solver=solver, split=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed))


def _class_precision(cls) -> float:
    """Test average precision of class `cls` against the rest, its cost chosen by cross-validation."""
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import cross_val_score
    from sklearn.svm import LinearSVC

    s = _shared

    def svm(cost: float) -> LinearSVC:
        return LinearSVC(C=cost, class_weight={1: POSITIVE_WEIGHT, 0: 1.0}, dual=s["solver"] == "dual",
                         tol=TOLERANCE, max_iter=MAX_ITERATIONS, random_state=s["seed"])

    positive_train, positive_test = (s["y_train"] == cls).astype(int), (s["y_test"] == cls).astype(int)
    fold_indices = list(s["split"].split(s["x_train"], positive_train))
    cv_ap = [cross_val_score(svm(c), s["x_train"], positive_train, cv=fold_indices, scoring="average_precision").mean()
             for c in s["costs"]]
    best = svm(s["costs"][int(np.argmax(cv_ap))]).fit(s["x_train"], positive_train)
    return average_precision_score(positive_test, best.decision_function(s["x_test"]))


def mean_average_precision(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                           classes, costs, folds: int, seed: int, solver: str, workers: int = 1) -> float:
    """Mean over `classes` of the test average precision, in percent; features (n, d), labels (n,).

    The features are converted to float64 once, not by liblinear in each of the (costs x folds + 1)
    fits per class (at 2,048 features a copy per fit), and each class's folds are split once for all
    costs. With `workers` > 1, classes are spread over that many spawned processes (order kept)."""
    if solver not in SOLVERS:
        raise ValueError(f"svm solver {solver!r} is not one of {', '.join(SOLVERS)}")
    arrays = (np.ascontiguousarray(x_train, dtype=np.float64), np.asarray(y_train),
              np.ascontiguousarray(x_test, dtype=np.float64), np.asarray(y_test))
    shared = (*arrays, tuple(costs), folds, seed, solver)
    classes = list(classes)
    if workers <= 1 or len(classes) <= 1:
        _share(*shared)
        try:
            precisions = [_class_precision(cls) for cls in classes]
        finally:
            _shared.clear()
    else:
        # spawn, not fork: a forked copy of a process running torch's thread pools can deadlock.
        with ProcessPoolExecutor(min(workers, len(classes)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_share, initargs=shared) as pool:
            precisions = list(pool.map(_class_precision, classes, chunksize=max(1, len(classes) // (4 * workers))))
    return 100.0 * float(np.mean(precisions))
