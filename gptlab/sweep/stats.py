"""The statistics of a sweep with seeds: a mean with its Student-t interval, a paired difference, Holm's correction.

Seeds are the unit of replication: each seed's run is one observation of a setting. With n seeds,

- `estimate(xs)`: mean, sample standard deviation s (n - 1 in the denominator) and the 95% interval
  mean ± t(0.975, n - 1) · s / √n; with one seed there is no interval (`n=1, no interval`).
- `paired(base, other)`: the differences d = other - base over the seeds both have (seed 0 against seed 0:
  the same data order, so the shared part of the noise cancels), their mean and t interval, and the
  two-sided paired t-test p-value (`scipy.stats.ttest_rel`).
- `holm(ps)`: Holm's step-down adjustment of several p-values, so that "some setting differs from the
  baseline" keeps a 5% family-wise error rate over all settings of the table.

Nothing here knows about runs or files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
NO_INTERVAL = "n=1, no interval"


@dataclass(frozen=True)
class Estimate:
    """Mean, sample std and Student-t interval of n observations (std and interval None when n < 2)."""

    n: int
    mean: float | None
    std: float | None = None
    low: float | None = None
    high: float | None = None

    @property
    def half(self) -> float | None:
        """Half the interval's width (the `±` of the tables)."""
        return None if self.low is None else (self.high - self.low) / 2


def t_interval(mean: float, std: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """mean ± t((1 + level) / 2, n - 1) · std / √n."""
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def estimate(values, level: float = LEVEL) -> Estimate:
    """The `Estimate` of the finite numbers in `values` (None and NaN are left out)."""
    xs = np.array([float(v) for v in values if _finite(v)], dtype=np.float64)
    n = len(xs)
    if n == 0:
        return Estimate(0, None)
    mean = float(xs.mean())
    if n == 1:
        return Estimate(1, mean)
    std = float(xs.std(ddof=1))
    low, high = t_interval(mean, std, n, level)
    return Estimate(n, mean, std, low, high)


@dataclass(frozen=True)
class Paired:
    """other - base over the seeds both have: mean difference, its interval, the paired t-test p-value."""

    seeds: tuple  # the seeds paired, sorted
    diff: Estimate
    p: float | None  # None with fewer than 2 pairs, or when every difference is the same number

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def distinguishable(self) -> bool | None:
        """Whether the interval excludes zero; None without an interval."""
        if self.diff.low is None:
            return None
        return not (self.diff.low <= 0.0 <= self.diff.high)


def paired(base: dict, other: dict, level: float = LEVEL) -> Paired:
    """Pair `other[seed]` with `base[seed]` for every seed that has a finite value in both."""
    seeds = tuple(sorted(s for s in base.keys() & other.keys() if _finite(base[s]) and _finite(other[s])))
    a = np.array([float(other[s]) for s in seeds])
    b = np.array([float(base[s]) for s in seeds])
    diff = estimate(a - b, level)
    p = None
    if len(seeds) >= 2 and diff.std:  # all differences equal: t is undefined (0/0) or infinite
        p = float(stats.ttest_rel(a, b).pvalue)
    return Paired(seeds, diff, p)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the input order (None stays None and is not counted).

    Sort the m p-values p(1) <= ... <= p(m); the adjusted p(i) is max over j <= i of min(1, (m - j + 1) p(j)).
    A hypothesis is rejected at level a exactly when its adjusted p-value is <= a."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def _finite(v) -> bool:
    return (
        isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and math.isfinite(v)
    )
