"""How sure a bias value is, from the answer counts it rests on.

A bias from 20 images is a noisy estimate: at true parity, gender bias from 20 images has a
standard deviation of about 0.2. Each front point therefore carries a 95% credible interval per
bias: the answer shares are drawn from their posterior under Jeffreys' prior (a Beta for the two
genders, a Dirichlet for the four ethnic groups, both with 0.5 added to each count, which keeps
the interval honest when every answer fell in one group), the bias of each draw is computed with
the method's formula, and the 2.5 and 97.5 percentiles are the interval, widened where needed to
hold the estimate itself (a bias near 0 sits at the edge of its range, where every draw is above
it, so an equal-tailed interval would leave it out). The draws are seeded by
the candidate id, so the interval is the same on every replay. Which objectives carry such an
interval, and how the others are bounded, is each objective's own statistic (`api.statistics`).
"""

from __future__ import annotations

import hashlib

import numpy as np

DRAWS = 4000
PRIOR = 0.5  # Jeffreys


def generator(key: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def gender_bias_interval(female: int, male: int, key: str, level: float = 0.95) -> tuple[float, float]:
    """The equal-tailed `level` interval of the gender bias (0.9: the 5th to the 95th percentile)."""
    female_share = generator(f"gender:{key}").beta(female + PRIOR, male + PRIOR, DRAWS)
    return _interval(np.abs(2 * female_share - 1), level)  # |F/N - 0.5| + |M/N - 0.5|, M/N = 1 - F/N


def ethnic_bias_interval(counts: list[int], key: str, level: float = 0.95) -> tuple[float, float]:
    shares = generator(f"ethnic:{key}").dirichlet(np.asarray(counts, dtype=float) + PRIOR, DRAWS)
    return _interval(shares.max(axis=1) - shares.min(axis=1), level)


def holding(interval: tuple[float, float], value: float) -> tuple[float, float]:
    """The interval widened to hold the estimate itself."""
    low, high = interval
    return min(low, value), max(high, value)
