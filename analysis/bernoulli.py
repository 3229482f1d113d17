"""The truncated-triplet paper's Bernoulli bound, computed exactly:
`python -m analysis.bernoulli --m 104 --p 0.001 --k 1 5 52`.

Pr[at least k of m negatives share the query's class] = sum_{j=k..m} C(m, j) p^j (1 - p)^(m - j),
with p the chance that a negative has the query's class. Evaluated in exact rational arithmetic,
so no term underflows however small; printed beside the values the paper states.
"""

from __future__ import annotations

import argparse
import math
import sys
from fractions import Fraction

# The paper's stated values for m = 104, p = 1/1000 (DESIGN.md claim 12).
PAPER_STATED = {(104, Fraction(1, 1000)): {52: "6.53e-121", 5: "3.03e-94"}}


def tail_probability(m: int, p: Fraction, k: int) -> Fraction:
    """Exact Pr[Binomial(m, p) >= k]."""
    if not 0 <= p <= 1 or m < 0:
        raise ValueError(f"need 0 <= p <= 1 and m >= 0, got p={p}, m={m}")
    return sum((math.comb(m, j) * p ** j * (1 - p) ** (m - j) for j in range(max(k, 0), m + 1)), Fraction(0))


def scientific(value: Fraction, digits: int = 3) -> str:
    """An exact fraction in scientific notation, however small (no float underflow)."""
    if value == 0:
        return "0"
    exponent = len(str(value.numerator)) - len(str(value.denominator))
    while value / Fraction(10) ** exponent >= 10:
        exponent += 1
    while value / Fraction(10) ** exponent < 1:
        exponent -= 1
    mantissa = round(float(value / Fraction(10) ** exponent), digits - 1)
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.{digits - 1}f}e{exponent:+03d}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.bernoulli", description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=104, help="negatives per query (batch size - 1)")
    parser.add_argument("--p", default="0.001", help="chance a negative shares the query's class, e.g. 0.001 or 1/10")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5, 52])
    args = parser.parse_args(argv)
    try:
        p = Fraction(args.p)
        rows = [(k, tail_probability(args.m, p, k)) for k in args.k]
    except (ValueError, ZeroDivisionError) as error:
        print(f"error: {error}; give --p as a probability such as 0.001 or 1/10", file=sys.stderr)
        return 2
    stated = PAPER_STATED.get((args.m, p), {})
    print(f"Pr[at least k of m={args.m} negatives share the query's class], p={args.p}")
    print(f"{'k':>4}  {'exact':>12}  {'paper states':>12}")
    for k, value in rows:
        print(f"{k:>4}  {scientific(value):>12}  {stated.get(k, '-'):>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
