"""Small statistics for benchmark reports: mean ± std, Student-t intervals, Wilson intervals.

Paired comparisons over a handful of seeds use the Student-t interval of the mean paired
difference with n − 1 degrees of freedom. (A percentile bootstrap over 3–5 seeds only spans the
smallest and largest difference and is not a 95% interval; the harness does not offer one.)
The t quantile is computed here from the regularised incomplete beta function, so the harness
needs no SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not xs:
        raise ValueError("xs must not be empty")
    m = sum(xs) / len(xs)
    if len(xs) == 1:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (95% for z = 1.96)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t distribution with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class MeanInterval:
    """Mean of a sample with its Student-t confidence interval.

    ``lo``/``hi`` are ``nan`` when n = 1 (no spread can be estimated).
    """

    mean: float
    lo: float
    hi: float
    std: float
    n: int
    level: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of 0."""
        return self.lo > 0.0 or self.hi < 0.0

    def fmt(self, digits: int = 4) -> str:
        """``mean [lo, hi] (n=…)`` with ``digits`` decimals."""
        if self.n < 2:
            return f"{self.mean:+.{digits}f} (n=1, no interval)"
        return (
            f"{self.mean:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}] (n={self.n})"
        )

    def as_dict(self) -> dict[str, float | int]:
        """A JSON-ready record."""
        return {
            "mean": self.mean,
            "lo": self.lo,
            "hi": self.hi,
            "std": self.std,
            "n": self.n,
            "level": self.level,
        }


def t_interval(xs: Sequence[float], *, level: float = 0.95) -> MeanInterval:
    """Student-t interval of the mean of ``xs`` with n − 1 degrees of freedom.

    Args:
        xs: the sample, e.g. per-seed paired differences ``a_s − b_s``.
        level: coverage, 0.95 by default.

    Returns:
        The mean, the interval ``mean ± t_{(1+level)/2, n−1} · s/√n``, the sample std and n.
    """
    if not xs:
        raise ValueError("xs must not be empty")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    m, s = mean_std(xs)
    n = len(xs)
    if n < 2:
        return MeanInterval(m, math.nan, math.nan, 0.0, n, level)
    half = student_t_quantile(0.5 + level / 2.0, n - 1) * s / math.sqrt(n)
    return MeanInterval(m, m - half, m + half, s, n, level)


def paired_t_interval(
    a: Sequence[float], b: Sequence[float], *, level: float = 0.95
) -> MeanInterval:
    """Student-t interval of the mean paired difference ``a_i − b_i`` (same seeds, same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    return t_interval([x - y for x, y in zip(a, b, strict=True)], level=level)
