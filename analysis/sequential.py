"""Seeds added in rounds until a study's comparisons are decided, without inflating false verdicts:
`python -m analysis.sequential --study NAME --folder DIR --max-seeds N` judges DIR's results at the
look their seed count is in the schedule, records the look in DIR/looks.json, prints each
comparison's verdict and exits 0 when the study may stop (every comparison decided, or N seeds),
3 when it needs the next round's seeds (`next: SEEDS` on the last line).

Looks are planned before any data (catalogue.seed_rounds: 3 seeds, then 2 more per round, up
to N). At a look
with n of N seeds (information fraction t = n / N) every one-sided test runs at the nominal level
of the Lan-DeMets alpha-spending boundary of O'Brien-Fleming type, alpha(t) = 2 - 2 Phi(z_(1 -
alpha/2) / sqrt(t)): early looks spend almost nothing, the last one nearly the full 2.5%.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.stats import norm

from analysis.claims import DECIDED, evaluate_claims, left_out_trials
from analysis.results import ResultsError, load_trials
from analysis.stats import ALPHA
from catalogue import CLAIMS, FIRST_ROUND, STUDIES, seed_rounds
from study.cli import OneLineParser
from study.files import replace_file

LOOKS = "looks.json"


def spent(fraction: float, alpha: float = ALPHA) -> float:
    """The one-sided alpha spent by information fraction t (O'Brien-Fleming type, Lan-DeMets)."""
    return float(2 - 2 * norm.cdf(norm.ppf(1 - alpha / 2) / np.sqrt(fraction)))


@lru_cache(maxsize=None)
def nominal_levels(seed_counts: tuple[int, ...], alpha: float = ALPHA) -> tuple[float, ...]:
    """Each look's one-sided nominal level: z boundaries c_k with P(no earlier crossing, Z_k >= c_k) =
    alpha(t_k) - alpha(t_(k-1)) under the null; the last look's fraction is 1.

    The score S_t = Z_t sqrt(t) of nested samples is a Brownian motion in the information fraction, so
    the density of S among paths not yet stopped is carried from look to look by convolving with the
    normal increment and cutting at each boundary (Armitage, McPherson and Rowe's recursion), on a grid.
    """
    fractions = np.asarray(seed_counts, dtype=float) / seed_counts[-1]
    step = 0.002
    grid = np.arange(-9.0, 9.0 + step / 2, step)
    density, previous_fraction, previous_spent, levels = None, 0.0, 0.0, []
    for fraction in fractions:
        spread = np.sqrt(fraction - previous_fraction)
        if density is None:
            density = norm.pdf(grid, scale=spread)
        else:
            half_width = int(np.ceil(8 * spread / step))  # an odd kernel, centred, so "same" does not shift
            offsets = step * np.arange(-half_width, half_width + 1)
            kernel = norm.pdf(offsets, scale=spread)
            density = np.convolve(density, kernel / kernel.sum(), mode="same")  # the kernel sums to 1 exactly
        increment = spent(fraction, alpha) - previous_spent
        mass = density * step
        above = np.cumsum(mass[::-1])[::-1] - mass / 2  # mass above each grid point (trapezoid rule)
        index = int(np.searchsorted(-above, -increment))  # first point whose mass above is <= increment
        # interpolate between the two grid points around the boundary, linear in the mass above
        low, high = above[index - 1], above[index]
        boundary = grid[index - 1] + step * (low - increment) / (low - high)
        density = np.where(grid >= boundary, 0.0, density)
        levels.append(float(norm.sf(boundary / np.sqrt(fraction))))
        previous_fraction, previous_spent = fraction, spent(fraction, alpha)
    return tuple(levels)


def level_at(seeds: int, max_seeds: int) -> float:
    """The nominal one-sided level of the look at `seeds` in the schedule up to max_seeds."""
    planned = seed_rounds(max_seeds)
    if seeds not in planned:
        raise ValueError(f"{seeds} seeds is not a look of the schedule {planned}")
    return nominal_levels(tuple(planned))[planned.index(seeds)]


def next_seeds(verdicts: list[str], seeds: int, max_seeds: int) -> int | None:
    """The seed count of the next round, or None when the study stops: every comparison is decided
    (reproduced, contradicted, negligible, or not testable at this scale, which more seeds cannot change:
    its resolution check is made at the whole seed budget), or the schedule is at its end."""
    if all(v in DECIDED for v in verdicts) or seeds >= max_seeds:
        return None
    return next(n for n in seed_rounds(max_seeds) if n > seeds)


def read_looks(path: Path, study: str) -> dict:
    """A looks.json, checked: {"max_seeds": N, "seeds": increasing looks of the schedule up to N, "study": its
    study where recorded}; raises ResultsError for anything else, since it sets the level of every test."""
    try:
        looks = json.loads(path.read_text())
        max_seeds, seeds = looks["max_seeds"], looks["seeds"]
        valid = (type(max_seeds) is int and FIRST_ROUND <= max_seeds and isinstance(seeds, list) and seeds
                 and all(type(n) is int for n in seeds) and seeds == sorted(set(seeds))
                 and set(seeds) <= set(seed_rounds(max_seeds)))
    except (OSError, ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise ResultsError(f"{path} is not a record of sequential looks (max_seeds, and increasing seed counts of "
                           f"its schedule); remove it, or rerun `python -m analysis.sequential --study {study}`")
    if looks.get("study", study) != study:
        raise ResultsError(f"{path} records the looks of study {looks['study']}, not {study}; remove it")
    return looks


def study_level(folder: Path, name: str, seeds: int) -> float | None:
    """The nominal level of a study whose folder records sequential looks (its last look's), or None: no
    looks, or a later fixed-seed run replaced the rounds' results."""
    path = folder / LOOKS
    if not path.exists():
        return None
    looks = read_looks(path, name)
    return level_at(seeds, looks["max_seeds"]) if seeds == looks["seeds"][-1] else None


def study_levels(scale_folder: Path) -> dict[str, float]:
    """The nominal level of each study of the scale's folder that has one (study_level)."""
    levels = {}
    for name in STUDIES:
        if (scale_folder / name / "trials.parquet").exists():
            seeds = load_trials(scale_folder / name, name)["seed"].nunique()
            level = study_level(scale_folder / name, name, seeds)
            if level is not None:
                levels[name] = level
    return levels


def judge(study: str, folder: Path, max_seeds: int) -> int:
    table = load_trials(folder, study)  # another study's folder is refused before anything is written
    seeds = int(table["seed"].nunique())
    if seeds not in seed_rounds(max_seeds):
        print(f"error: {folder} holds {seeds} seeds, not a look of the schedule {seed_rounds(max_seeds)}; "
              f"add seeds with `python -m study.run {study} --seeds auto --max-seeds {max_seeds}`", file=sys.stderr)
        return 2
    level = level_at(seeds, max_seeds)
    claims = [c for c in CLAIMS if any(part.study == study for part in c.comparisons)]
    verdicts = evaluate_claims({study: table}, claims, {study: level})
    path = folder / LOOKS
    earlier = read_looks(path, study)["seeds"] if path.exists() else []
    looks = {"study": study, "max_seeds": max_seeds, "seeds": [n for n in earlier if n < seeds] + [seeds]}
    replace_file(path, json.dumps(looks) + "\n")
    print(f"{study}: look at {seeds} of at most {max_seeds} seeds, one-sided level {level:.5f}")
    for _, row in verdicts.iterrows():
        why = f" ({row['not_testable']})" if row["verdict"] == "not testable" else ""
        print(f"  claim {row['claim']}: {row['comparison']} ({row['metric']}): {row['verdict']}{why}")
    for trial in left_out_trials({study: table}).get(study, []):
        print(f"  left out (unfinished): {trial}")
    following = next_seeds(list(verdicts["verdict"]), seeds, max_seeds)
    if following is None:
        outcomes = verdicts["verdict"].value_counts()
        print(f"stops at {seeds} seeds: " + (f"the schedule ends at {max_seeds}" if seeds >= max_seeds else
              "every comparison decided (" + ", ".join(f"{n} {v}" for v, n in outcomes.items()) + ")"))
        return 0
    print(f"next: {following}")
    return 3


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m analysis.sequential", description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, choices=sorted(STUDIES))
    parser.add_argument("--folder", type=Path, required=True, help="the folder holding the study's trials.parquet")
    parser.add_argument("--max-seeds", type=int, required=True)
    args = parser.parse_args(argv)
    if args.max_seeds < FIRST_ROUND:
        print(f"error: --max-seeds {args.max_seeds}: must be at least {FIRST_ROUND}, the first round", file=sys.stderr)
        return 2
    try:
        return judge(args.study, args.folder, args.max_seeds)
    except (FileNotFoundError, ResultsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
