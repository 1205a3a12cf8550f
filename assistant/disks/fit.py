"""Robust statistics in pure Python: Theil-Sen line fit, median, MAD.

Perseus (FAST '23) fits latency against throughput across the drives of one model
and flags a drive whose points lie above the fit's upper bound. A fail-slow
drive is itself in the data, so the fit must be robust: Theil-Sen (the median of
pairwise slopes) ignores up to ~29 % of outlying points. Numbers here are floats
in whatever unit the caller uses (the detector passes natural logarithms).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

#: Most point pairs a fit looks at; beyond it pairs are sampled (deterministically).
MAX_PAIRS = 1500
#: Pairs closer than this in x carry no slope information (a log-load difference of 5 %).
MIN_DX = 0.05
#: Fewer informative pairs than this: the fit is a constant (slope 0).
MIN_PAIRS = 8
#: 1.4826 * MAD estimates the standard deviation of normally distributed data.
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Line:
    """``y = intercept + slope * x``."""

    intercept: float
    slope: float

    def at(self, x: float) -> float:
        """Return the fitted y at ``x``."""
        return self.intercept + self.slope * x


def median(values: Sequence[float]) -> float:
    """Return the median of a non-empty sequence."""
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def mad_sigma(values: Sequence[float]) -> float:
    """Return the median absolute deviation scaled to a standard deviation (0 for < 2 values)."""
    if len(values) < 2:
        return 0.0
    centre = median(values)
    return MAD_TO_SIGMA * median([abs(v - centre) for v in values])


def upper_quantile(values: Sequence[float], q: float) -> float:
    """Return the ``q`` (0..1) empirical quantile of ``values`` (nearest rank; 0 if empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _pairs(n: int) -> list[tuple[int, int]]:
    total = n * (n - 1) // 2
    if total <= MAX_PAIRS:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    rng = random.Random(n)  # the same points give the same fit
    out = []
    for _ in range(MAX_PAIRS):
        i, j = rng.randrange(n), rng.randrange(n)
        if i != j:
            out.append((min(i, j), max(i, j)))
    return out


def theil_sen(
    xs: Sequence[float], ys: Sequence[float], *, min_slope: float = 0.0, max_slope: float = 1.0
) -> Line:
    """Fit a line robustly: the slope is the median of pairwise slopes, clamped.

    :param xs: the load of each point (the detector: ln IOPS).
    :param ys: the latency of each point (the detector: ln ms per request).
    :param min_slope: smallest slope allowed (0: latency does not fall as load grows).
    :param max_slope: largest slope allowed (1 in log-log: latency at most proportional).
    :return: the line; slope 0 when the points do not spread enough in x.
    """
    if not xs:
        raise ValueError("no points to fit")
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i, j in _pairs(len(xs))
        if abs(xs[j] - xs[i]) >= MIN_DX
    ]
    slope = median(slopes) if len(slopes) >= MIN_PAIRS else 0.0
    slope = min(max(slope, min_slope), max_slope)
    return Line(median([y - slope * x for x, y in zip(xs, ys, strict=True)]), slope)
