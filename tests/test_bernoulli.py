from fractions import Fraction

from analysis.bernoulli import main, scientific, tail_probability


def test_tail_against_direct_float_summation():
    from math import comb

    m, p = 20, 0.3
    for k in (0, 1, 5, 12, 20):
        direct = sum(comb(m, j) * p ** j * (1 - p) ** (m - j) for j in range(k, m + 1))
        assert abs(float(tail_probability(m, Fraction(3, 10), k)) - direct) < 1e-12
    assert tail_probability(m, Fraction(3, 10), 0) == 1


def test_design_values_for_the_paper_setting():
    p = Fraction(1, 1000)
    assert scientific(tail_probability(104, p, 52)) == "1.50e-126"  # the paper states 6.53e-121
    assert scientific(tail_probability(104, p, 5)) == "8.47e-08"  # the paper states 3.03e-94
    assert scientific(tail_probability(104, p, 1)) == scientific(1 - Fraction(999, 1000) ** 104)


def exact_tail(m, p, k):
    from math import comb

    return sum((comb(m, j) * p ** j * (1 - p) ** (m - j) for j in range(max(k, 0), m + 1)), Fraction(0))


def test_tail_matches_exact_rational_arithmetic_to_35_digits():
    import mpmath

    for m, p in [(104, Fraction(1, 1000)), (1500, Fraction(1, 10)), (301, Fraction(1, 2)), (50, Fraction(9, 10))]:
        for k in sorted({1, 2, 5, m // 10, m // 3, m // 2, m // 2 + 1, m - 1, m, m + 1}):
            exact = exact_tail(m, p, k)
            with mpmath.workdps(60):
                reference = mpmath.mpf(exact.numerator) / exact.denominator
                error = abs(tail_probability(m, p, k) - reference)
                assert error <= reference * mpmath.mpf(10) ** -35, (m, p, k)


def test_large_m_keeps_precision_where_floats_underflow():
    # Pr[X >= m] = p^m and Pr[X >= 1] = 1 - (1 - p)^m in closed form; 2^-1e6 = 1.0099e-301030
    assert scientific(tail_probability(10 ** 6, Fraction(1, 2), 10 ** 6)) == "1.01e-301030"
    assert scientific(tail_probability(10 ** 6, Fraction(1, 2), 1)) == "1.00e+00"
    assert scientific(tail_probability(10 ** 6, Fraction(1, 2), 500001)) == scientific(
        1 - tail_probability(10 ** 6, Fraction(1, 2), 500000))  # symmetry: Pr[X > n/2] = Pr[X < n/2]


def test_scientific_formatting():
    assert scientific(Fraction(12345, 10 ** 130)) == "1.23e-126"
    assert scientific(Fraction(9999, 1000)) == "1.00e+01"
    assert scientific(Fraction(0)) == "0"


def test_cli_prints_exact_and_stated(capsys):
    assert main(["--m", "104", "--p", "0.001", "--k", "1", "5", "52"]) == 0
    out = capsys.readouterr().out
    assert "1.50e-126" in out and "6.53e-121" in out and "8.47e-08" in out and "3.03e-94" in out
    assert main(["--p", "abc"]) == 2
    assert main(["--m", "1500", "--p", "0.1", "--k", "1500"]) == 0  # once a 4,300-digit int conversion
    assert "1.00e-1500" in capsys.readouterr().out
    assert main(["--m", "1000001"]) == 2 and main(["--k", "-1"]) == 2


def test_forty_digits_match_exact_rational_arithmetic(capsys):
    """The tail for m = 104, p = 1/1000, k = 5, summed exactly in fractions and rounded by the decimal
    module, against what `--digits 40` prints."""
    import decimal
    from fractions import Fraction
    from math import comb

    from analysis import bernoulli

    p = Fraction(1, 1000)
    exact = sum(comb(104, j) * p ** j * (1 - p) ** (104 - j) for j in range(5, 105))
    with decimal.localcontext() as context:
        context.prec = 40
        expected = decimal.Decimal(exact.numerator) / decimal.Decimal(exact.denominator)
    mantissa, exponent = f"{expected:.39e}".split("e")
    assert bernoulli.main(["--m", "104", "--p", "1/1000", "--k", "5", "--digits", "40"]) == 0
    printed = capsys.readouterr().out.splitlines()[2].split()[1]
    assert printed == f"{mantissa}e{int(exponent):+03d}"
