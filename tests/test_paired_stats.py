"""tubemask.eval.paired_stats against tabulated Student-t quantiles, a hand-computed t-test and exact sign tests."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.eval.paired_stats import holm, paired_t_test, sign_test, student_t_cdf, student_t_quantile


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 1, 12.7062),
        (0.975, 4, 2.7764),
        (0.975, 9, 2.2622),
        (0.975, 30, 2.0423),
        (0.995, 2, 9.9248),
        (0.95, 5, 2.0150),
        (0.9, 10, 1.3722),
    ],
)
def test_quantiles_match_the_table(p, df, expected):
    assert student_t_quantile(p, df) == pytest.approx(expected, abs=1e-4)


@settings(max_examples=50, deadline=None)
@given(t=st.floats(-30, 30), df=st.integers(1, 200))
def test_cdf_is_symmetric_and_inverts(t, df):
    assert student_t_cdf(t, df) + student_t_cdf(-t, df) == pytest.approx(1.0, abs=1e-10)
    p = student_t_cdf(t, df)
    if 1e-9 < p < 1 - 1e-9:
        assert student_t_quantile(p, df) == pytest.approx(t, abs=1e-6 * max(1.0, abs(t)))


def test_cauchy_and_normal_limits():
    assert student_t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
    assert student_t_cdf(1.959964, 1e6) == pytest.approx(0.975, abs=1e-5)


def test_paired_t_test_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0, 5.5], [0.5, 1.5, 2.0, 4.2, 5.0]
    r = paired_t_test(a, b)
    d = [0.5, 0.5, 1.0, -0.2, 0.5]
    mean = sum(d) / 5
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / 4) / math.sqrt(5)
    assert r.mean == pytest.approx(mean) and r.se == pytest.approx(se) and r.n == 5
    assert (r.low, r.high) == pytest.approx((mean - 2.776445 * se, mean + 2.776445 * se), abs=1e-6)
    assert r.p == pytest.approx(0.0740, abs=1e-3)  # 2 * (1 - F_4(2.4045))
    assert not r.excludes_zero
    assert paired_t_test([2.0, 3.0, 4.0], [1.0, 1.5, 2.0]).excludes_zero


def test_constant_differences_and_errors():
    r = paired_t_test([1.0, 1.0], [0.0, 0.0])
    assert r.p == 0.0 and r.excludes_zero
    assert paired_t_test([1.0, 1.0], [1.0, 1.0]).p == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        paired_t_test([1.0], [0.0])
    with pytest.raises(ValueError, match="line up"):
        paired_t_test([1.0, 2.0], [0.0])
    with pytest.raises(ValueError, match="line up"):
        sign_test([1.0], [])


def test_sign_test_exact():
    assert sign_test([1] * 5, [0] * 5).p == pytest.approx(2 / 32)
    r = sign_test([1, 1, 1, 1, 1, 1, 1, 1, 1, 0], [0] * 9 + [1])
    assert (r.wins, r.losses, r.ties) == (9, 1, 0) and r.p == pytest.approx(2 * 11 / 1024)
    r = sign_test([1, 0, 2], [1, 0, 1])
    assert (r.wins, r.losses, r.ties, r.p) == (1, 0, 2, 1.0)


def test_holm_by_hand():
    """R: `p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm")` is 0.03 0.06 0.06 0.02 (the sorted p-values times 4, 3, 2,
    1, each raised to the one before it where smaller: 0.04 x 1 becomes 0.06)."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.3, 0.6]) == pytest.approx([0.6, 0.6]) and holm([0.02]) == [0.02] and holm([]) == []
    with pytest.raises(ValueError, match="p-value 1 is nan"):
        holm([0.1, math.nan])
    with pytest.raises(ValueError, match="p-value 0 is 1.5"):
        holm([1.5])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_holm_properties(p, rng):
    """Never below the raw p-value nor above 1; the raw order is kept; the smallest is multiplied by the family's
    size; the result follows the p-values when they are reordered."""
    adjusted = holm(p)
    assert all(r <= a <= 1.0 for r, a in zip(p, adjusted, strict=True))
    assert all(adjusted[i] <= adjusted[j] for i in range(len(p)) for j in range(len(p)) if p[i] <= p[j])
    assert min(adjusted) == pytest.approx(min(1.0, len(p) * min(p)))
    order = list(range(len(p)))
    rng.shuffle(order)
    assert holm([p[i] for i in order]) == [adjusted[i] for i in order]
