"""The statistics behind every verdict: the blocked model of a study, the four forms of a comparison,
Holm's correction over a claim's family, and the seeds a comparison needs for 80% power.

A study runs every factor value (arm) with the same seeds, and a seed fixes the data order,
initialisation and augmentations shared by all arms, so seeds are blocks:

    value ~ arm + seed   (OLS; one residual variance pooled over every arm of the study)

A contrast mean(A) - mean(B) is estimated from this model with its standard error and the model's
residual degrees of freedom; with a balanced arm x seed table its SE is sqrt(2 MSE / seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import integrate, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

# One-sided level of every test: a comparison is decided when its 95% two-sided interval clears the
# boundary, i.e. each one-sided test (and each half of TOST) runs at 2.5%.
ALPHA = 0.025
POWER = 0.8
MAX_SEEDS_SHOWN = 1000  # beyond this the report prints "n/a": the effect is too small to chase


@dataclass(frozen=True)
class Contrast:
    """An estimated difference with its standard error and degrees of freedom."""
    effect: float
    se: float
    df: float
    residual_sd: float  # the model's residual SD (the SD of one value around arm + seed)
    seeds: int  # seeds per arm in the contrast (the smaller arm)

    def interval(self, confidence: float = 1 - 2 * ALPHA) -> tuple[float, float]:
        if not self.se > 0 or not self.df > 0:
            return float("nan"), float("nan")
        half = stats.t.ppf(0.5 + confidence / 2, self.df) * self.se
        return float(self.effect - half), float(self.effect + half)


def blocked_contrast(values: pd.DataFrame, higher, lower) -> Contrast:
    """mean(higher) - mean(lower) from value ~ C(arm) + C(seed) fitted to every arm of the study.

    values: one row per trial with columns value (the arm), seed and metric.
    """
    data = values.dropna(subset=["metric"])
    data = data.assign(arm=pd.Categorical(data["value"].astype(str)), seed=data["seed"].astype(str))
    seeds = int(min((data["arm"] == str(arm)).sum() for arm in (higher, lower)))
    if seeds == 0:
        return Contrast(float("nan"), float("nan"), 0.0, float("nan"), 0)
    # Without an intercept the arm coding is full rank: one coefficient per arm, seeds as treatment.
    formula = "metric ~ 0 + C(arm) + C(seed)" if data["seed"].nunique() > 1 else "metric ~ 0 + C(arm)"
    fit = smf.ols(formula, data=data).fit()
    weights = np.zeros(len(fit.params))
    names = list(fit.params.index)
    weights[names.index(f"C(arm)[{higher}]")] = 1.0
    weights[names.index(f"C(arm)[{lower}]")] = -1.0
    effect = float(weights @ fit.params.to_numpy())
    if fit.df_resid < 1:
        return Contrast(effect, float("nan"), 0.0, float("nan"), seeds)
    se = float(np.sqrt(weights @ fit.cov_params().to_numpy() @ weights))
    return Contrast(effect, se, float(fit.df_resid), float(np.sqrt(fit.scale)), seeds)


def one_sample(values: np.ndarray) -> Contrast:
    """mean(values) against 0: the form of a change within one arm (rise / fall over training)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    n = len(values)
    if n < 2:
        return Contrast(float(values.mean()) if n else float("nan"), float("nan"), 0.0, float("nan"), n)
    sd = float(values.std(ddof=1))
    return Contrast(float(values.mean()), sd / math.sqrt(n), n - 1.0, sd, n)


# How the report writes each form of catalogue.Comparison between its two values.
SYMBOLS = {"superiority": ">", "non-inferiority": ">=", "non-superiority": "not >", "equivalence": "~"}


def form_pvalues(contrast: Contrast, form: str, margin: float) -> tuple[float, float, float]:
    """(support, against, negligible): one-sided p-values of the form's tests, from the contrast's t
    statistic: support against the null that the comparison's claim is false, against against the null
    that it holds; negligible (superiority only, else NaN) is TOST's against the null |effect| >= margin:
    rejected, the effect is smaller than the smallest effect of interest."""
    if not contrast.se > 0 or not contrast.df > 0:
        return float("nan"), float("nan"), float("nan")
    d, se, df = contrast.effect, contrast.se, contrast.df

    def above(bound):  # p of H0: effect <= bound
        return float(stats.t.sf((d - bound) / se, df))

    def below(bound):  # p of H0: effect >= bound
        return float(stats.t.cdf((d - bound) / se, df))

    nan = float("nan")
    if form == "superiority":
        return above(0.0), below(0.0), max(above(-margin), below(margin))
    if form == "non-inferiority":
        return above(-margin), below(-margin), nan
    if form == "non-superiority":
        return below(margin), above(margin), nan
    if form == "equivalence":  # TOST; against: the whole interval outside the band on either side
        return max(above(-margin), below(margin)), min(above(margin), below(-margin)), nan
    raise ValueError(f"unknown form {form!r}; use one of {', '.join(SYMBOLS)}")


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values of a family (NaN entries stay NaN and do not count)."""
    pvalues = np.asarray(pvalues, dtype=float)
    adjusted = np.full(len(pvalues), np.nan)
    present = ~np.isnan(pvalues)
    if present.any():
        adjusted[present] = multipletests(pvalues[present], method="holm")[1]
    return adjusted.tolist()


def resolvable_effect(residual_sd: float, seeds: int, paired: bool = True, alpha: float = ALPHA,
                      power: float = POWER) -> float:
    """The smallest true effect that `seeds` seeds per arm detect with `power` in a one-sided test at
    `alpha` (paired as in seeds_for_power): the inverse of seeds_for_power in the effect."""
    if not residual_sd > 0:
        return float("nan")
    effect_size = TTestPower().solve_power(nobs=seeds, alpha=alpha, power=power, alternative="larger")
    return float(effect_size * residual_sd * (math.sqrt(2) if paired else 1.0))


def seeds_for_power(shift: float, residual_sd: float, paired: bool = True, alpha: float = ALPHA,
                    power: float = POWER) -> float:
    """Seeds per arm for `power` of a one-sided test to clear a boundary `shift` away from the truth.

    paired: a blocked contrast of two arms (SD of a per-seed difference = sqrt(2) residual SD);
    otherwise one sample. NaN where the shift is not positive or the answer exceeds MAX_SEEDS_SHOWN.
    """
    if not (shift > 0 and residual_sd > 0):
        return float("nan")
    effect_size = shift / (residual_sd * (math.sqrt(2) if paired else 1.0))
    return smallest_seeds(lambda seeds: TTestPower().power(effect_size=effect_size, nobs=seeds, alpha=alpha,
                                                           alternative="larger"), power)


def smallest_seeds(power_at, power: float) -> float:
    """The smallest seed count in 2..MAX_SEEDS_SHOWN whose power reaches `power` (power grows with seeds)."""
    low, high = 2, MAX_SEEDS_SHOWN
    if power_at(high) < power:
        return float("nan")
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if power_at(middle) < power else (low, middle)
    return float(low)


def tost_power(effect: float, margin: float, residual_sd: float, seeds: int, paired: bool = True,
               alpha: float = ALPHA) -> float:
    """Exact power of two one-sided tests with `seeds` seeds at a true difference `effect` (paired as in
    seeds_for_power).

    Given the sample SD s, TOST rejects when the mean lies within margin - t_crit s / sqrt(n) of 0; the
    mean is normal and (n - 1) s^2 / sigma^2 is chi-square, so the power is one integral over the latter.
    """
    sd = residual_sd * (math.sqrt(2) if paired else 1.0)
    df = seeds - 1
    critical = stats.t.ppf(1 - alpha, df)
    sd_of_mean = sd / math.sqrt(seeds)

    def given(chi_square):
        half = margin - critical * sd_of_mean * math.sqrt(chi_square / df)
        inside = stats.norm.cdf((half - effect) / sd_of_mean) - stats.norm.cdf((-half - effect) / sd_of_mean)
        return inside * stats.chi2.pdf(chi_square, df)

    widest = df * (margin / (critical * sd_of_mean)) ** 2  # beyond it the acceptance region is empty
    low, high = stats.chi2.ppf(1e-12, df), min(widest, stats.chi2.isf(1e-12, df))  # where the chi-square lives
    return float(integrate.quad(given, low, high, limit=200)[0]) if high > low else 0.0


def seeds_for_equivalence(effect: float, margin: float, residual_sd: float, paired: bool = True,
                          power: float = POWER) -> float:
    """Seeds per arm for `power` of TOST at a true difference `effect` inside the band; NaN outside."""
    if not (abs(effect) < margin and residual_sd > 0):
        return float("nan")
    return smallest_seeds(lambda seeds: tost_power(effect, margin, residual_sd, seeds, paired), power)


def seeds_to_decide(contrast: Contrast, form: str, margin: float, assumed: float, paired: bool) -> float:
    """Seeds per arm for 80% power to decide the comparison, were the true difference `assumed`.

    A decision is either verdict: the test whose boundary lies on the other side of `assumed` from
    its null, so the shift is the distance from `assumed` to the form's boundary.
    """
    sd = contrast.residual_sd
    if form == "equivalence":
        if abs(assumed) < margin:
            return seeds_for_equivalence(assumed, margin, sd, paired)
        return seeds_for_power(abs(assumed) - margin, sd, paired)
    boundary = {"superiority": 0.0, "non-inferiority": -margin, "non-superiority": margin}[form]
    return seeds_for_power(abs(assumed - boundary), sd, paired)


def planning_effect(form: str, margin: float) -> float:
    """The true difference power is planned for: the smallest effect of interest for superiority,
    no difference for the forms whose boundary is the margin itself."""
    return margin if form == "superiority" else 0.0
