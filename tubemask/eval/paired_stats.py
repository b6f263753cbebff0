"""Paired comparisons over seeds: the two-sided paired t-test with its confidence interval, and the exact sign test.

An experiment that compares two arms on the same seeds (same data, same initial draws) reports per-seed differences
`d_i = a_i - b_i`. [paired_t_test][tubemask.eval.paired_stats.paired_t_test] gives the mean difference, its standard
error, the Student-t interval at the chosen level (`n - 1` degrees of freedom, not the normal's 2 SE) and the
two-sided p-value; [sign_test][tubemask.eval.paired_stats.sign_test] counts the seeds each arm wins and gives the
exact two-sided binomial p-value (ties dropped). Both in plain Python: the Student-t distribution through the
regularised incomplete beta function (continued fraction, as in Numerical Recipes 6.4), checked against tabulated
quantiles in the tests. A table of several such comparisons is a family of tests: [holm][tubemask.eval.paired_stats.holm]
adjusts their p-values so that the chance of any false "better" in the family stays at the level (Holm 1979).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PairedTTest", "SignTest", "holm", "paired_t_test", "sign_test", "student_t_cdf", "student_t_quantile"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function `I_x(a, b)`."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """`P(T <= t)` for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"student_t_cdf: df={df}; must be > 0")
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The `t` with `P(T <= t) = p` (bisection on the CDF to 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"student_t_quantile: p={p}; must be in (0, 1)")
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class PairedTTest:
    """Result of [paired_t_test][tubemask.eval.paired_stats.paired_t_test]: mean difference, its standard error,
    the `level` interval `(low, high)`, the t statistic, the two-sided p-value and the number of pairs."""

    mean: float
    se: float
    low: float
    high: float
    t: float
    p: float
    n: int
    level: float

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies wholly above or wholly below 0 (the only case the docs may say "beats")."""
        return self.low > 0 or self.high < 0


def paired_t_test(a: list[float], b: list[float], *, level: float = 0.95) -> PairedTTest:
    """Two-sided paired t-test of `mean(a - b) = 0`, with the Student-t interval at `level`.

    Raises:
        ValueError: when `a` and `b` differ in length or hold fewer than 2 pairs.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_t_test: {len(a)} values against {len(b)}; the pairs must line up")
    n = len(a)
    if n < 2:
        raise ValueError(f"paired_t_test: {n} pair(s); need at least 2")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    q = student_t_quantile(0.5 + level / 2, n - 1)
    if se == 0:
        t = math.copysign(math.inf, mean) if mean else 0.0
        p = 0.0 if mean else 1.0
    else:
        t = mean / se
        p = 2 * (1 - student_t_cdf(abs(t), n - 1))
    return PairedTTest(mean, se, mean - q * se, mean + q * se, t, p, n, level)


@dataclass(frozen=True)
class SignTest:
    """Result of [sign_test][tubemask.eval.paired_stats.sign_test]: pairs `a` won, pairs `b` won, ties, and the exact
    two-sided binomial p-value over the untied pairs."""

    wins: int
    losses: int
    ties: int
    p: float


def sign_test(a: list[float], b: list[float]) -> SignTest:
    """Exact two-sided sign test of the pairs `(a_i, b_i)` (ties dropped).

    Raises:
        ValueError: when `a` and `b` differ in length.
    """
    if len(a) != len(b):
        raise ValueError(f"sign_test: {len(a)} values against {len(b)}; the pairs must line up")
    wins = sum(x > y for x, y in zip(a, b, strict=True))
    losses = sum(x < y for x, y in zip(a, b, strict=True))
    n = wins + losses
    if n == 0:
        return SignTest(0, 0, len(a), 1.0)
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return SignTest(wins, losses, len(a) - n, min(1.0, 2 * tail))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (Holm 1979, "A simple sequentially rejective multiple test
    procedure"), in the order given: with the `m` p-values sorted ascending, the `i`-th (from 1) becomes
    `min(1, max over j <= i of (m - j + 1) * p_(j))`. An adjusted p-value under a level rejects at that level with
    the family-wise error rate held, for any dependence between the tests; it is never below the raw one (and equals
    it for a family of one). R's `p.adjust(p, "holm")` gives the same numbers.

    Raises:
        ValueError: for a p-value outside [0, 1] (or NaN), named by its position.
    """
    for i, p in enumerate(p_values):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"holm: p-value {i} is {p}; p-values lie in [0, 1]")
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
