"""Success-rate statistics: a rate from 20 episodes is noisy, so every rate comes with an interval.

The Wilson score interval is used instead of the normal approximation because it stays inside
[0, 1] and keeps sensible coverage at 0/n and n/n, which are common in evaluation tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for `successes` out of `n` Bernoulli trials, e.g. 8/10 -> (0.490, 0.943)."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"wilson_interval: need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"wilson_interval: confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0  # no evidence: the whole range
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, center - half), min(1.0, center + half)
    # The Wilson edges are exactly 0 at k = 0 and 1 at k = n; float rounding would leave 1 - 1e-16.
    return (0.0 if successes == 0 else lo), (1.0 if successes == n else hi)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile q in [0, 100] (NaN for an empty sequence)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
