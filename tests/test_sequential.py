"""Seeds in rounds: the alpha-spending boundary against published values and a simulation, the stop rule,
and the command study.run calls after each round."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize
from scipy.special import stdtr
from scipy.stats import norm

from analysis.sequential import nominal_levels, next_seeds, spent, study_levels
from catalogue import seed_rounds

ROOT = Path(__file__).resolve().parents[1]


def test_boundary_matches_the_published_obrien_fleming_type_values():
    # Lan-DeMets O'Brien-Fleming-type spending, one-sided 0.025 (two-sided 0.05). Two looks at t = 0.5, 1:
    # z boundaries 2.9626 and 1.9686; five equally spaced looks: 4.877, 3.357, 2.680, 2.290, 2.031
    # (Jennison and Turnbull, Group Sequential Methods with Applications to Clinical Trials, ch. 7).
    first, last = (norm.isf(level) for level in nominal_levels((5, 10)))
    assert first == pytest.approx(2.9626, abs=2e-4) and last == pytest.approx(1.9686, abs=5e-4)
    five = [norm.isf(level) for level in nominal_levels((1, 2, 3, 4, 5))]
    assert five == pytest.approx([4.877, 3.357, 2.680, 2.290, 2.031], abs=1.5e-3)
    assert nominal_levels((3,)) == pytest.approx((0.025,), abs=1e-6)  # one look spends all of alpha


def test_second_boundary_against_a_direct_integral():
    # P(Z1 < c1, Z2 >= c2) = alpha(1) - alpha(1/2) with corr(Z1, Z2) = sqrt(1/2), by one-dimensional quadrature
    c1 = norm.isf(spent(0.5))
    rho = np.sqrt(0.5)

    def crossing_second(c2):
        return integrate.quad(lambda z: norm.pdf(z) * norm.sf((c2 - rho * z) / np.sqrt(1 - rho ** 2)), -12, c1,
                              epsabs=1e-13)[0]

    c2 = optimize.brentq(lambda c: crossing_second(c) - (spent(1.0) - spent(0.5)), 1.0, 3.0, xtol=1e-10)
    assert norm.isf(nominal_levels((5, 10))[1]) == pytest.approx(c2, abs=1e-4)


def test_looking_after_every_round_keeps_false_verdicts_near_alpha():
    # No true difference; a paired study looked at after 3, 5, 7 and 9 seeds, stopping at the first
    # one-sided rejection. The boundary holds the rate near 2.5%; testing each look at 2.5% does not.
    rng = np.random.default_rng(0)
    looks = seed_rounds(9)
    differences = rng.normal(size=(20000, looks[-1]))
    levels = nominal_levels(tuple(looks))
    sequential = np.zeros(len(differences), bool)
    naive = np.zeros(len(differences), bool)
    for seeds, level in zip(looks, levels):
        part = differences[:, :seeds]
        t = part.mean(axis=1) / (part.std(axis=1, ddof=1) / np.sqrt(seeds))
        p = 1 - stdtr(seeds - 1, t)
        sequential |= p < level
        naive |= p < 0.025
    assert looks == [3, 5, 7, 9]
    assert abs(sequential.mean() - 0.025) < 0.006
    assert naive.mean() > 0.045


def test_a_study_stops_when_every_comparison_is_decided_or_at_the_last_look():
    assert next_seeds(["reproduced", "inconclusive"], 3, 9) == 5
    assert next_seeds(["reproduced", "contradicted"], 3, 9) is None
    assert next_seeds(["inconclusive"], 9, 9) is None
    # negligible and not testable are decided too: more seeds change neither
    assert next_seeds(["negligible", "not testable", "reproduced"], 3, 9) is None
    assert next_seeds(["negligible", "inconclusive"], 3, 9) == 5
    assert seed_rounds(8) == [3, 5, 7, 8] and seed_rounds(3) == [3]


def lambda_table(seeds: int, gap: float) -> pd.DataFrame:
    """The lambda study with 0.75 `gap` points above every other value."""
    rng = np.random.default_rng(seeds)
    rows = []
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        for seed in range(seeds):
            # seed SD 0.15 against a 20-point trained gain: the margin rule finds the paper's scaled gap resolvable
            final = 70.0 + seed + (gap if value == 0.75 else 0.0) + rng.normal(0, 0.15)
            rows += [{"value": value, "seed": seed, "epoch": epoch, "config_hash": f"{value}-{seed}",
                      "svm_map": final if epoch else 50.0, "knn_top1": 40.0} for epoch in (0, 4)]
    return pd.DataFrame(rows)


def judge(folder: Path, max_seeds: int):
    return subprocess.run([sys.executable, "-m", "analysis.sequential", "--study", "lambda", "--folder", str(folder),
                           "--max-seeds", str(max_seeds)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_command_asks_for_the_next_round_and_records_its_looks(tmp_path):
    lambda_table(3, 0.0).to_parquet(tmp_path / "trials.parquet")
    undecided = judge(tmp_path, 9)
    assert undecided.returncode == 3, undecided.stderr
    assert undecided.stdout.splitlines()[-1] == "next: 5"
    assert json.loads((tmp_path / "looks.json").read_text()) == {"study": "lambda", "max_seeds": 9, "seeds": [3]}

    lambda_table(5, 3.0).to_parquet(tmp_path / "trials.parquet")
    decided = judge(tmp_path, 9)
    assert decided.returncode == 0, decided.stdout + decided.stderr
    assert decided.stdout.splitlines()[-1].startswith("stops at 5 seeds: every comparison decided (")
    assert json.loads((tmp_path / "looks.json").read_text()) == {"study": "lambda", "max_seeds": 9, "seeds": [3, 5]}
    scale = tmp_path / "scale"
    (scale / "lambda").mkdir(parents=True)
    (tmp_path / "looks.json").rename(scale / "lambda" / "looks.json")
    lambda_table(5, 3.0).to_parquet(scale / "lambda" / "trials.parquet")
    assert study_levels(scale) == {"lambda": pytest.approx(nominal_levels((3, 5, 7, 9))[1])}
    lambda_table(7, 3.0).to_parquet(scale / "lambda" / "trials.parquet")  # a later fixed run of 7 seeds
    assert study_levels(scale) == {}

    lambda_table(4, 3.0).to_parquet(tmp_path / "trials.parquet")
    off_schedule = judge(tmp_path, 9)
    assert off_schedule.returncode == 2 and off_schedule.stderr.startswith("error: ")
    assert off_schedule.stderr.count("\n") == 1
