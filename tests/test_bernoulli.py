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


def test_scientific_formatting():
    assert scientific(Fraction(12345, 10 ** 130)) == "1.23e-126"
    assert scientific(Fraction(9999, 1000)) == "1.00e+01"
    assert scientific(Fraction(0)) == "0"


def test_cli_prints_exact_and_stated(capsys):
    assert main(["--m", "104", "--p", "0.001", "--k", "1", "5", "52"]) == 0
    out = capsys.readouterr().out
    assert "1.50e-126" in out and "6.53e-121" in out and "8.47e-08" in out and "3.03e-94" in out
    assert main(["--p", "abc"]) == 2
