"""The statistics of the verdicts against independent references: a two-way ANOVA by hand, Holm's
step-down by hand, TOST and the noncentral t by hand, and a simulated power."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import stats

# 3 arms x 4 seeds with a strong seed effect (seed 3 is 5 points up on every arm).
TABLE = {"a": [80.0, 81.5, 79.0, 85.5], "b": [78.0, 80.0, 77.5, 83.0], "c": [79.0, 79.5, 78.0, 84.0]}


def values(table=TABLE) -> pd.DataFrame:
    return pd.DataFrame([{"value": arm, "seed": seed, "metric": v}
                         for arm, row in table.items() for seed, v in enumerate(row)])


def test_blocked_contrast_matches_a_two_way_anova_by_hand():
    y = np.array(list(TABLE.values()))  # arms x seeds
    arms, seeds = y.shape
    residual = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()
    mse = (residual ** 2).sum() / ((arms - 1) * (seeds - 1))
    contrast = stats.blocked_contrast(values(), "a", "b")
    assert contrast.effect == pytest.approx(y[0].mean() - y[1].mean())
    assert contrast.se == pytest.approx(math.sqrt(2 * mse / seeds))
    assert contrast.df == (arms - 1) * (seeds - 1)
    assert contrast.residual_sd == pytest.approx(math.sqrt(mse))
    low, high = contrast.interval()
    half = scipy_stats.t.ppf(0.975, 6) * math.sqrt(2 * mse / seeds)
    assert (low, high) == pytest.approx((contrast.effect - half, contrast.effect + half))


def test_blocking_removes_the_seed_effect_that_a_welch_interval_keeps():
    contrast = stats.blocked_contrast(values(), "a", "b")
    welch = scipy_stats.ttest_ind(TABLE["a"], TABLE["b"], equal_var=False)
    welch_se = contrast.effect / welch.statistic
    assert contrast.se < welch_se / 3


def test_one_sample_is_the_t_interval_against_zero():
    change = np.array([0.40, 0.43, 0.41])
    contrast = stats.one_sample(change)
    assert contrast.effect == pytest.approx(0.41333333)
    assert contrast.se == pytest.approx(np.std(change, ddof=1) / math.sqrt(3))
    assert contrast.df == 2


def hand_t(effect, se, df):
    """t tail probabilities from the hand-written Student t density, integrated numerically."""
    grid = np.linspace(-60, 60, 400001)
    density = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2)) * (1 + grid ** 2 / df) ** (
        -(df + 1) / 2)
    cdf = np.cumsum(density) * (grid[1] - grid[0])
    return lambda bound: float(np.interp((effect - bound) / se, grid, cdf))  # P(T <= (effect - bound) / se)


def test_each_form_tests_against_its_boundary():
    contrast = stats.Contrast(effect=0.3, se=0.2, df=6.0, residual_sd=0.3, seeds=4)
    cdf = hand_t(0.3, 0.2, 6.0)
    margin = 0.5
    # superiority's third p: TOST of |effect| >= margin, the larger of P(T > (0.3 + 0.5) / se), P(T < (0.3 - 0.5) / se)
    assert stats.form_pvalues(contrast, "superiority", margin) == pytest.approx(
        (1 - cdf(0.0), cdf(0.0), max(1 - cdf(-0.5), cdf(0.5))), abs=1e-4)
    assert stats.form_pvalues(contrast, "non-inferiority", margin)[:2] == pytest.approx(
        (1 - cdf(-0.5), cdf(-0.5)), abs=1e-4)
    assert stats.form_pvalues(contrast, "non-superiority", margin)[:2] == pytest.approx(
        (cdf(0.5), 1 - cdf(0.5)), abs=1e-4)


def test_tost_on_a_hand_example():
    # effect 0.1, se 0.15, df 10, margin 0.5: t_lower = (0.1 + 0.5) / 0.15 = 4.0, t_upper = (0.1 - 0.5) / 0.15
    # = -2.6667; p = max(P(T > 4.0), P(T < -2.6667)) = P(T10 > 2.6667), the larger tail.
    contrast = stats.Contrast(effect=0.1, se=0.15, df=10.0, residual_sd=0.2, seeds=6)
    support, against, _ = stats.form_pvalues(contrast, "equivalence", 0.5)
    cdf = hand_t(0.1, 0.15, 10.0)
    assert 1 - cdf(-0.5) < cdf(0.5)  # the upper test is the binding one
    assert support == pytest.approx(cdf(0.5), abs=1e-5)
    assert against > 0.5  # nothing shows the difference outside the band
    outside = stats.Contrast(effect=1.5, se=0.15, df=10.0, residual_sd=0.2, seeds=6)
    assert stats.form_pvalues(outside, "equivalence", 0.5)[1] < 1e-4


def test_resolvable_effect_inverts_the_seeds_for_power():
    # 15 seeds resolve d = 0.77802 paired SDs: P(T' > t(0.975, 14)) = 0.8 for a noncentral t with delta = d sqrt(15)
    resolvable = stats.resolvable_effect(0.4, 15)
    assert resolvable == pytest.approx(0.77802 * 0.4 * math.sqrt(2), rel=1e-4)
    assert stats.seeds_for_power(resolvable * 1.001, 0.4) == 15  # just above it, 15 seeds suffice
    assert stats.seeds_for_power(resolvable * 0.95, 0.4) > 15


def test_holm_on_a_hand_example():
    # sorted 0.01, 0.02, 0.04 with m = 3: 0.03, max(0.03, 0.04) = 0.04, max(0.04, 0.04) = 0.04
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    # 0.005 x 4 = 0.02; 0.03 x 3 = 0.09; 0.04 x 2 = 0.08 -> 0.09 (monotone); 0.5 x 1
    adjusted = stats.holm([0.5, 0.03, float("nan"), 0.005, 0.04])
    assert adjusted[2] != adjusted[2]
    assert [adjusted[i] for i in (0, 1, 3, 4)] == pytest.approx([0.5, 0.09, 0.02, 0.09])


def test_seeds_for_power_reach_80_percent_by_the_noncentral_t():
    shift, sd = 0.5, 0.6  # per-seed difference SD = sqrt(2) * 0.6
    n = int(stats.seeds_for_power(shift, sd))
    effect_size = shift / (math.sqrt(2) * sd)

    def power(seeds):  # one-sided paired t at 2.5%: P(T' > t_crit), T' noncentral with ncp = d sqrt(n)
        critical = scipy_stats.t.ppf(0.975, seeds - 1)
        return scipy_stats.nct.sf(critical, seeds - 1, effect_size * math.sqrt(seeds))

    assert power(n) >= 0.8 > power(n - 1)
    # Guenther's approximation: n ~ ((z_0.975 + z_0.8) / d)^2 + z_0.975^2 / 2 = 22.6 + 1.9
    assert abs(n - 24.5) <= 1
    assert math.isnan(stats.seeds_for_power(0.0, sd)) and math.isnan(stats.seeds_for_power(-1.0, sd))


def test_tost_power_against_simulation():
    rng = np.random.default_rng(0)
    seeds, effect, margin, sd = 8, 0.1, 0.5, 0.4
    differences = rng.normal(effect, math.sqrt(2) * sd, size=(20000, seeds))
    mean, se = differences.mean(axis=1), differences.std(axis=1, ddof=1) / math.sqrt(seeds)
    critical = scipy_stats.t.ppf(0.975, seeds - 1)
    simulated = np.mean(((mean + margin) / se > critical) & ((mean - margin) / se < -critical))
    assert stats.tost_power(effect, margin, sd, seeds) == pytest.approx(simulated, abs=0.01)
    n = stats.seeds_for_equivalence(0.0, margin, sd)
    assert stats.tost_power(0.0, margin, sd, int(n)) >= 0.8 > stats.tost_power(0.0, margin, sd, int(n) - 1)
    assert math.isnan(stats.seeds_for_equivalence(0.6, margin, sd))  # outside the band


def test_seeds_to_decide_measure_from_the_forms_boundary():
    contrast = stats.Contrast(effect=-0.2, se=0.3, df=4.0, residual_sd=0.5, seeds=3)
    # non-inferiority at margin 0.5: the observed -0.2 is 0.3 above the boundary -0.5
    assert stats.seeds_to_decide(contrast, "non-inferiority", 0.5, -0.2, True) == stats.seeds_for_power(0.3, 0.5)
    # superiority: a negative observed effect is decided by the test against it, 0.2 away from 0
    assert stats.seeds_to_decide(contrast, "superiority", 0.5, -0.2, True) == stats.seeds_for_power(0.2, 0.5)
    # One sample (paired=False): the SD of a value, not of a per-seed difference, so fewer seeds.
    unpaired = stats.seeds_to_decide(contrast, "non-inferiority", 0.5, -0.2, False)
    assert unpaired == stats.seeds_for_power(0.3, 0.5, paired=False) < stats.seeds_for_power(0.3, 0.5)
    # equivalence: inside the margin by TOST, outside it by the distance to the nearer bound
    assert stats.seeds_to_decide(contrast, "equivalence", 0.5, 0.1, True) == stats.seeds_for_equivalence(
        0.1, 0.5, 0.5, True)
    assert stats.seeds_to_decide(contrast, "equivalence", 0.5, -0.7, True) == stats.seeds_for_power(0.2, 0.5)
    assert stats.planning_effect("superiority", 0.5) == 0.5 and stats.planning_effect("equivalence", 0.5) == 0.0
