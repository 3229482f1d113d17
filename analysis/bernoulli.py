"""The truncated-triplet paper's Bernoulli bound, computed to 40 significant digits:
`python -m analysis.bernoulli --m 104 --p 0.001 --k 1 5 52`.

Pr[at least k of m negatives share the query's class] = sum_{j=k..m} C(m, j) p^j (1 - p)^(m - j),
with p the chance that a negative has the query's class. The sum runs in mpmath's arbitrary-precision
floats, whose exponents do not underflow, so a tail of 1e-3000000 is as precise as one of 1e-3;
it starts at the term next to k (from its log-gamma form) and walks away from the distribution's
mean by the ratio of neighbouring terms, so it needs few terms at any m. Printed beside the values
the paper states.
"""

from __future__ import annotations

import sys
from fractions import Fraction

import mpmath

from study.cli import OneLineParser

DIGITS = 40  # the most digits printed (--digits; 3 by default), all of them exact
GUARD_DIGITS = 15
MAX_M = 10 ** 6

# The paper's stated values for m = 104, p = 1/1000 (DESIGN.md claim 12).
PAPER_STATED = {(104, Fraction(1, 1000)): {52: "6.53e-121", 5: "3.03e-94"}}


def tail_probability(m: int, p: Fraction, k: int) -> mpmath.mpf:
    """Pr[Binomial(m, p) >= k], to DIGITS significant digits (summed with GUARD_DIGITS more, so that
    rounding in the sum never reaches a printed digit)."""
    if not 0 <= p <= 1 or m < 0:
        raise ValueError(f"need 0 <= p <= 1 and m >= 0, got p={p}, m={m}")
    with mpmath.workdps(DIGITS + GUARD_DIGITS):
        if k <= 0:
            return mpmath.mpf(1)
        if k > m or p == 0:
            return mpmath.mpf(0)
        if p == 1:
            return mpmath.mpf(1)
        success = mpmath.mpf(p.numerator) / p.denominator
        failure = mpmath.mpf(p.denominator - p.numerator) / p.denominator
        if k > m * p:  # the upper tail is the small side: sum it directly
            return _walk(m, success, failure, k, step=1)
        # the lower tail Pr[X <= k - 1] is at most about 1/2 here, so 1 minus it keeps full precision
        return 1 - _walk(m, success, failure, k - 1, step=-1)


def _walk(m: int, success: mpmath.mpf, failure: mpmath.mpf, start: int, step: int) -> mpmath.mpf:
    """Sum of the binomial terms from j = start outward (step +1 to m, -1 to 0), which shrink beyond
    the mode; stops once a term no longer changes the sum at this precision."""
    log_term = (mpmath.loggamma(m + 1) - mpmath.loggamma(start + 1) - mpmath.loggamma(m - start + 1)
                + start * mpmath.log(success) + (m - start) * mpmath.log(failure))
    term, total, j = mpmath.exp(log_term), mpmath.mpf(0), start
    odds = success / failure
    negligible = mpmath.mpf(10) ** -(DIGITS + 2)
    while 0 <= j <= m:
        total += term
        if step > 0:
            following = term * (m - j) / (j + 1) * odds
        else:
            following = term * j / ((m - j + 1) * odds)
        if following < term and following <= total * negligible:
            break
        term, j = following, j + step
    return total


def scientific(value, digits: int = 3) -> str:
    """A probability (mpmath number or exact Fraction) in scientific notation with `digits` significant
    digits (up to DIGITS), however small: the mantissa is rounded in mpmath, never through a float."""
    with mpmath.workdps(DIGITS + GUARD_DIGITS):
        if isinstance(value, Fraction):
            value = mpmath.mpf(value.numerator) / value.denominator
        value = mpmath.mpf(value)
        if value == 0:
            return "0"
        exponent = int(mpmath.floor(mpmath.log10(value)))
        scale = mpmath.mpf(10) ** (digits - 1)
        mantissa = mpmath.nint(value / mpmath.mpf(10) ** exponent * scale)  # digits-digit integer, rounded
        if mantissa < scale:  # log10 rounded just below an exact power of ten
            exponent -= 1
            mantissa = mpmath.nint(value / mpmath.mpf(10) ** exponent * scale)
        if mantissa >= 10 * scale:  # rounding carried into a new digit: 9.995 -> 10.0
            exponent += 1
            mantissa = mpmath.nint(mantissa / 10)
        digits_text = str(int(mantissa))
        fraction = f".{digits_text[1:]}" if digits > 1 else ""
        return f"{digits_text[0]}{fraction}e{exponent:+03d}"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m analysis.bernoulli", description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=104, help=f"negatives per query (batch size - 1), up to {MAX_M}")
    parser.add_argument("--p", default="0.001", help="chance a negative shares the query's class, e.g. 0.001 or 1/10")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5, 52])
    parser.add_argument("--digits", type=int, default=3,
                        help=f"significant digits printed, 1..{DIGITS} (default 3, as the paper prints them)")
    args = parser.parse_args(argv)
    if not 0 <= args.m <= MAX_M:
        print(f"error: --m {args.m} is outside 0..{MAX_M}; give the negatives per query", file=sys.stderr)
        return 2
    if not 1 <= args.digits <= DIGITS:
        print(f"error: --digits {args.digits} is outside 1..{DIGITS}", file=sys.stderr)
        return 2
    if min(args.k) < 0:
        print(f"error: --k {min(args.k)} is negative; give counts k >= 0", file=sys.stderr)
        return 2
    try:
        p = Fraction(args.p)
        rows = [(k, tail_probability(args.m, p, k)) for k in args.k]
    except (ValueError, ZeroDivisionError) as error:
        print(f"error: {error}; give --p as a probability such as 0.001 or 1/10", file=sys.stderr)
        return 2
    stated = PAPER_STATED.get((args.m, p), {})
    print(f"Pr[at least k of m={args.m} negatives share the query's class], p={args.p}")
    width = max(12, args.digits + 7)
    print(f"{'k':>4}  {'value':>{width}}  {'paper states':>12}")
    for k, value in rows:
        print(f"{k:>4}  {scientific(value, args.digits):>{width}}  {stated.get(k, '-'):>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
