"""Calibrated bounds on a candidate's true values from a partial evaluation, and the error budget
that decides at which error each bound is taken.

Every function takes plain numbers (counts, sums, sizes; numpy arrays of them for the `*_array`
forms, which evaluate many candidates at once) and returns bounds at a stated one-sided `error`:
the lower bound is below the true value, and the upper bound above it, each with probability at
least `1 - error`; together they are a two-sided interval at level `1 - 2 * error`
(`error_of_level`). For a minimised objective the lower bound is the optimistic one.

Bounds, and what they rest on:

- A share (the valid-images share; each ethnic group's share) from k successes in n trials: the
  randomised Clopper-Pearson bounds, which invert the exact test of the binomial. Equivalently,
  with u the tie-break, they are quantiles of the mixture u * Beta(k, n - k + 1) +
  (1 - u) * Beta(k + 1, n - k) of the share's two Clopper-Pearson Beta posteriors (Jeffreys'
  Beta(k + 1/2, n - k + 1/2) sits between them, close to the even mix u = 1/2).
- Gender bias |2p - 1| (p the female share of the mapped answers, `api.bias`): the set of p
  that the exact randomised test of T = |F - M| does not reject. T's distribution depends on the
  bias alone (p and 1 - p give the same), so the bias's bounds are exact at every true p; the set
  of p is symmetric about 1/2, holds 1/2 (the optimistic bound is 0) whenever parity is not
  rejected, and is the credible set of the share's Beta confidence distribution folded at 1/2:
  the optimistic bound b solves Pi(s <= (1 + b)/2) + Pi(s <= (1 - b)/2) = error, with Pi the
  mixture above for the majority share s (F != M). It is NOT the posterior interval of the folded
  statistic, which at F = 2, M = 3 leaves 0 out although parity is plainly credible.
- Ethnic bias max r - min r over four groups: the range of max - min over a box of simultaneous
  per-share intervals (each the share bound above; the Dirichlet's marginals are these Betas).
  Optimistic: max_i low_i - min_j high_j (at least 0), with per-share error a such that at the
  least favourable truth, all shares equal, the bound is exceeded with probability `error`: with
  equal shares, L > 0 exactly when the range of the estimates exceeds 2 z_a sd, so z_a is the
  studentized range quantile q_{1-error}(4, inf) / (2 sqrt(3/4)) (about error / 3.7 at 0.2).
  Pessimistic: max_i high_i - min_j low_j (at most 1) at per-share error `error`: it can only miss
  when the largest share's upper bound or the smallest share's lower bound does, and those two
  errors overlap completely when two groups share everything (r, 1 - r, 0, 0), its least
  favourable truth. Elsewhere both bounds are conservative (the ranges of other truths have slack).
- Quality: the mean of the per-image scores +- the Student t quantile (n - 1 degrees of freedom)
  x the sample SD / sqrt(n), clipped to [0, 1]; one image says nothing of the spread: [0, 1].
- Energy per image of a full evaluation: the part's J per generated image, scaled by the ratio of
  the full evaluation's batch composition to the part's, times 1 + the expected regenerations per
  kept image, bounded by the exact randomised test of the regeneration count; measurement noise
  is added by MOVER (`energy_bounds_array` states the model).
- Error budget: `bonferroni`, `holm` (step-down) and `generation_error` (the search's error over
  its generations, known or not).

Tie-break u: each randomised bound takes u in [0, 1]; u uniform (`tiebreak`, seeded by the
candidate id, so a replay decides alike) makes the share and gender bounds exact: they hold with
probability exactly 1 - error at every true value. u = 1/2 (mid-p) is deterministic and only
exact on average over true values.

Coverage, as the tests (`tests/unit/test_bounds.py`) and `benchmarks/bound_coverage.py` measure
it: the probability, over the data and u, that a bound holds the true value on its side, at
k in {2, 5, 20} images, (i) averaged over true values drawn from a reference distribution that
resembles real candidates (stated in `benchmarks/bound_coverage.py`: half the female shares near
parity in U(0.4, 0.6), a quarter anywhere, a quarter far, within 0.1 of 0 or 1; ethnic shares a
third near balance Dirichlet(20, 20, 20, 20), a third the defaults' skew mixed towards balance by
a uniform weight, a third Dirichlet(1, 1, 1, 1); quality scores Beta-distributed per image around
a mean in U(0.3, 0.8) with SD in U(0.02, 0.1); valid shares half in U(0.8, 1), half in U(0, 1);
regeneration probabilities per attempt 0 to 0.7 with 3 retries), and (ii) at the least favourable
true values (the infimum over them: the confidence coefficient). Share and gender bounds are
exact in both senses; ethnic bounds are exact in (ii) and conservative in (i); quality is exact for
normal scores and within 0.02 for the reference's Beta scores; energy is exact without measurement
noise, and with it the optimistic side stays within 0.02 while the pessimistic side over-covers.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np
import numpy.typing as npt


def _special() -> ModuleType:
    """scipy.special, imported on first use: the worker imports this module (through `api.bias`
    and `api.statistics`) but never bounds anything, and its image has no scipy."""
    return importlib.import_module("scipy.special")


def _stats() -> ModuleType:
    """scipy.stats, imported on first use (see `_special`)."""
    return importlib.import_module("scipy.stats")


FloatArray = npt.NDArray[np.float64]
MID_P = 0.5  # the deterministic tie-break: mid-p bounds
_BISECTIONS = 36  # halvings of [0, 1]: 1.5e-11, far below any count's resolution
_RATE_GRID = 2048  # intervals of the grid of failure rates the regeneration test is tabulated on
_RATES = np.linspace(0.0, 1.0, _RATE_GRID + 1)
_EXACT_REGENERATIONS = 4096  # tabulate exactly up to this many possible counts; beyond, normal
ETHNIC_GROUP_COUNT = 4


@dataclass(frozen=True)
class Interval:
    """A lower and an upper bound, each at the one-sided error it was asked for."""

    low: float
    high: float

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


def error_of_level(level: float) -> float:
    """The one-sided error of each side of a two-sided interval at `level` (0.9: 0.05)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"a level is in (0, 1), got {level}")
    return (1.0 - level) / 2.0


def tiebreak(key: str, stream: int = 0) -> float:
    """A uniform number in [0, 1) fixed by `key` (the candidate id) and `stream` (which bound)."""
    digest = hashlib.sha256(f"tiebreak:{key}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _check_error(error: float) -> None:
    if not 0.0 < error < 1.0:
        raise ValueError(f"an error rate is in (0, 1), got {error}")


def _floats(values: npt.ArrayLike) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


def _binomial_cdf(k: FloatArray, n: FloatArray, p: FloatArray) -> FloatArray:
    """P(X <= k) for X ~ Binomial(n, p), elementwise (0 below 0); scipy.special's, without the
    per-call overhead of scipy.stats' distribution objects."""
    trials = np.asarray(n, dtype=np.int64)  # the integer loop: the float one warns per element
    return np.where(k < 0, 0.0, _floats(_special().bdtr(np.maximum(k, 0.0), trials, p)))


def _binomial_pvalue(k: FloatArray, n: FloatArray, p: FloatArray, u: FloatArray) -> FloatArray:
    """P(X > k) + u P(X = k): the randomised p-value of k successes, increasing in p."""
    at_most = _binomial_cdf(k, n, p)
    return 1.0 - at_most + u * (at_most - _binomial_cdf(k - 1.0, n, p))


def _first_at_least(increasing: Callable[[FloatArray], FloatArray], target: FloatArray) -> FloatArray:
    """The smallest x in [0, 1] with increasing(x) >= target, elementwise (bisection)."""
    low, high = np.zeros_like(target), np.ones_like(target)
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2.0
        above = increasing(middle) >= target
        high = np.where(above, middle, high)
        low = np.where(above, low, middle)
    return (low + high) / 2.0


def _inverted(
    pvalue: Callable[[FloatArray], FloatArray], error: float, shape: tuple[int, ...]
) -> tuple[FloatArray, FloatArray]:
    """The confidence bounds of a parameter in [0, 1] from a randomised p-value that increases with
    it: lower = inf{x: pvalue(x) > error}, upper = sup{x: pvalue(x) < 1 - error}. Both hold with
    probability 1 - error when pvalue at the true value is uniform (an exact randomised test)."""
    lower_target = np.full(shape, error)
    upper_target = np.full(shape, 1.0 - error)
    at_zero, at_one = pvalue(np.zeros(shape)), pvalue(np.ones(shape))
    lower = np.where(
        at_zero > error, 0.0, np.where(at_one <= error, 1.0, _first_at_least(pvalue, lower_target))
    )
    upper = np.where(
        at_one < 1.0 - error,
        1.0,
        np.where(at_zero >= 1.0 - error, 0.0, _first_at_least(pvalue, upper_target)),
    )
    return lower, upper


# ----------------------------------------------------------------------------- shares


def share_bounds_array(
    successes: npt.ArrayLike, trials: npt.ArrayLike, error: float, u: npt.ArrayLike = MID_P
) -> tuple[FloatArray, FloatArray]:
    """Randomised Clopper-Pearson bounds of a binomial share, elementwise; no trials: [0, 1]."""
    _check_error(error)
    k, n, tie = np.broadcast_arrays(_floats(successes), _floats(trials), _floats(u))

    def pvalue(p: FloatArray) -> FloatArray:
        return _binomial_pvalue(k, n, p, tie)

    lower, upper = _inverted(pvalue, error, k.shape)
    empty = n == 0
    return np.where(empty, 0.0, lower), np.where(empty, 1.0, upper)


def share_bounds(successes: int, trials: int, error: float, u: float = MID_P) -> Interval:
    """The share's bounds from `successes` of `trials` (e.g. valid images of all images)."""
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials], got {successes} of {trials}")
    lower, upper = share_bounds_array(successes, trials, error, u)
    return Interval(float(lower), float(upper))


# ----------------------------------------------------------------------------- gender bias


def gender_bias_bounds_array(
    female: npt.ArrayLike, male: npt.ArrayLike, error: float, u: npt.ArrayLike = MID_P
) -> tuple[FloatArray, FloatArray]:
    """Bounds of the true gender bias |2p - 1| from the mapped answers, elementwise; with no mapped
    answer nothing is known: [0, 1] (the reported bias is 1 by rule, not an estimate)."""
    _check_error(error)
    f, m, tie = np.broadcast_arrays(_floats(female), _floats(male), _floats(u))
    n = f + m
    t = np.abs(f - m)
    above, below = (n + t) / 2.0, (n - t) / 2.0  # the majority's and the minority's count
    folded = t > 0

    def pvalue(bias: FloatArray) -> FloatArray:
        p = (1.0 + bias) / 2.0
        up_to_above = _binomial_cdf(above, n, p)
        below_below = _binomial_cdf(below - 1.0, n, p)
        larger = 1.0 - up_to_above + below_below  # X above the majority's count, or below the minority's
        equal = up_to_above - _binomial_cdf(above - 1.0, n, p)
        equal = equal + np.where(folded, _binomial_cdf(below, n, p) - below_below, 0.0)
        return larger + tie * equal  # P(T > t) + u P(T = t) at this bias

    lower, upper = _inverted(pvalue, error, f.shape)
    empty = n == 0
    return np.where(empty, 0.0, lower), np.where(empty, 1.0, upper)


def gender_bias_bounds(female: int, male: int, error: float, u: float = MID_P) -> Interval:
    """The true gender bias's bounds from F female and M male answers (F = 2, M = 3 at error 0.2:
    parity is credible, so the optimistic bound is 0)."""
    lower, upper = gender_bias_bounds_array(female, male, error, u)
    return Interval(float(lower), float(upper))


# ----------------------------------------------------------------------------- ethnic bias


@lru_cache(maxsize=64)
def ethnic_share_error(error: float, groups: int = ETHNIC_GROUP_COUNT) -> float:
    """The per-share error that makes the optimistic ethnic bias bound exact at equal shares: there
    it exceeds 0 when the range of the share estimates passes 2 z sd(share), and that range is
    sd(share) / sqrt(1 - 1/groups) times the studentized range of `groups` normals."""
    _check_error(error)
    quantile = float(_stats().studentized_range.ppf(1.0 - error, groups, np.inf))
    return float(_stats().norm.sf(quantile / (2.0 * math.sqrt(1.0 - 1.0 / groups))))


def ethnic_bias_bounds_array(
    counts: npt.ArrayLike, error: float, u: npt.ArrayLike = MID_P
) -> tuple[FloatArray, FloatArray]:
    """Bounds of the true ethnic bias from the mapped answers per group (last axis: the groups,
    `api.bias.ETHNIC_GROUPS` order); `u` one tie-break per group (or one for all). No mapped
    answer: [0, 1]."""
    _check_error(error)
    groups = _floats(counts)
    tie = np.broadcast_to(_floats(u), groups.shape)
    n = np.broadcast_to(groups.sum(axis=-1, keepdims=True), groups.shape)
    share_error = ethnic_share_error(error, groups.shape[-1])
    low, high = share_bounds_array(groups, n, share_error, tie)
    lower = np.maximum(0.0, low.max(axis=-1) - high.min(axis=-1))
    low, high = share_bounds_array(groups, n, error, tie)
    upper = np.minimum(1.0, high.max(axis=-1) - low.min(axis=-1))
    empty = n[..., 0] == 0
    return np.where(empty, 0.0, lower), np.where(empty, 1.0, upper)


def ethnic_bias_bounds(counts: Sequence[int], error: float, u: float | Sequence[float] = MID_P) -> Interval:
    """The true ethnic bias's bounds from the answers per group; `u`: one tie-break per group, or
    one for all."""
    lower, upper = ethnic_bias_bounds_array(list(counts), error, u)
    return Interval(float(lower), float(upper))


# ----------------------------------------------------------------------------- quality


def quality_bounds_array(
    mean: npt.ArrayLike, stddev: npt.ArrayLike, images: npt.ArrayLike, error: float
) -> tuple[FloatArray, FloatArray]:
    """Student t bounds of the true mean quality, elementwise. `stddev` is the per-image spread as
    the worker records it (population SD, ddof 0); fewer than two images: [0, 1]."""
    _check_error(error)
    average, spread, n = np.broadcast_arrays(_floats(mean), _floats(stddev), _floats(images))
    known = n >= 2
    degrees = np.where(known, n - 1.0, 1.0)
    sample_sd = spread * np.sqrt(n / degrees)
    margin = _floats(_stats().t.ppf(1.0 - error, degrees)) * sample_sd / np.sqrt(np.where(known, n, 1.0))
    lower = np.where(known, np.clip(average - margin, 0.0, 1.0), 0.0)
    upper = np.where(known, np.clip(average + margin, 0.0, 1.0), 1.0)
    return lower, upper


def quality_bounds(mean: float, stddev: float, images: int, error: float) -> Interval:
    """The true mean quality's bounds (quality is maximised: the upper bound is the optimistic one)."""
    lower, upper = quality_bounds_array(mean, stddev, images, error)
    return Interval(float(lower), float(upper))


# ----------------------------------------------------------------------------- energy


def regenerations_per_image(rate: npt.ArrayLike, max_retries: int) -> FloatArray:
    """Expected regenerations per kept image when each attempt fails the human filter with
    probability `rate` and an image is retried at most `max_retries` times: rate + ... + rate^R."""
    q = _floats(rate)
    return sum((q**j for j in range(1, max_retries + 1)), np.zeros_like(q))


@lru_cache(maxsize=32)
def _regeneration_table(images: int, max_retries: int) -> tuple[FloatArray, FloatArray]:
    """P(R > r) and P(R = r) of the regenerations R of `images` images, for every r (columns), on
    `_RATES` (rows). One image's regenerations are min(Geometric, max_retries): P(j) = q^j (1 - q)
    below the cap, q^cap at it; the images' sum is their convolution (by FFT)."""
    powers = _RATES[:, None] ** np.arange(max_retries + 1)[None, :]
    one = powers * (1.0 - _RATES[:, None])
    one[:, max_retries] = powers[:, max_retries]
    size = images * max_retries + 1
    length = 1 << (size - 1).bit_length()
    total = np.fft.irfft(np.fft.rfft(one, length, axis=1) ** images, length, axis=1)[:, :size]
    pmf = np.clip(total, 0.0, None)
    pmf /= pmf.sum(axis=1, keepdims=True)
    return np.clip(1.0 - np.cumsum(pmf, axis=1), 0.0, 1.0), pmf


def _regeneration_pvalue(
    index: npt.NDArray[np.int64], regenerated: FloatArray, u: FloatArray, images: int, max_retries: int
) -> FloatArray:
    """P(R > r) + u P(R = r) at the rates `_RATES[index]`: exact from the table, or, where the table
    would be too large, from the normal approximation of R + V (V uniform, independent), for which
    P(R + V > r + 1 - u) is the same randomised p-value."""
    if images * max_retries + 1 <= _EXACT_REGENERATIONS:
        above, pmf = _regeneration_table(images, max_retries)
        column = regenerated.astype(np.int64)
        return _floats(above[index, column] + u * pmf[index, column])
    q = _RATES[index]
    steps = np.arange(1, max_retries + 1)
    powers = q[..., None] ** steps
    mean = powers.sum(axis=-1)
    variance = (powers * (2 * steps - 1)).sum(axis=-1) - mean**2
    spread = np.sqrt(images * variance + 1.0 / 12.0)
    return _floats(_stats().norm.sf((regenerated + 1.0 - u - images * mean - 0.5) / spread))


def _rate_quantiles(
    regenerated: FloatArray, images: int, max_retries: int, u: FloatArray, levels: FloatArray
) -> FloatArray:
    """Quantiles of the failure rate's confidence distribution H(q) = P(R > r) + u P(R = r) (the
    randomised p-value of the regeneration count r, increasing in q), elementwise for `regenerated`
    and `u` (shape S) at `levels` (shape S + (L,)), linearly interpolated between grid rates."""
    count = np.broadcast_to(np.clip(regenerated, 0, images * max_retries)[..., None], levels.shape)
    tie = np.broadcast_to(u[..., None], levels.shape)

    def h(index: npt.NDArray[np.int64]) -> FloatArray:
        return _regeneration_pvalue(index, count, tie, images, max_retries)

    low = np.zeros(levels.shape, dtype=np.int64)  # h(low) < level, or low = 0
    high = np.full(levels.shape, _RATE_GRID, dtype=np.int64)  # h(high) >= level, or high = grid end
    for _ in range(math.ceil(math.log2(_RATE_GRID)) + 1):
        middle = (low + high) // 2
        reached = h(middle) >= levels
        high = np.where(reached, middle, high)
        low = np.where(reached, low, middle)
    at_low, at_high = h(low), h(high)
    rising = at_high > at_low
    step = np.clip((levels - at_low) / np.where(rising, at_high - at_low, 1.0), 0.0, 1.0)
    quantile = _RATES[low] + np.where(rising, step, 1.0) * (_RATES[high] - _RATES[low])
    quantile = np.where(h(np.zeros_like(low)) >= levels, 0.0, quantile)
    return np.where(h(np.full_like(low, _RATE_GRID)) < levels, 1.0, quantile)


def _recovered(deviation: FloatArray, spread: FloatArray) -> FloatArray:
    """How far a sum's bound lies from its estimate, from its parts' (MOVER): the regeneration
    part's `deviation` (estimate to bound; negative where the tie-break put the bound beyond the
    estimate) and the noise part's `spread`; either alone gives back the other exactly."""
    root = np.hypot(spread, deviation)
    return np.where(deviation >= 0, root, root - 2.0 * np.abs(deviation))


def energy_bounds_array(
    joules_per_image: npt.ArrayLike,
    images: int,
    regenerated: npt.ArrayLike,
    error: float,
    *,
    max_retries: int = 0,
    batch_ratio: float = 1.0,
    relative_stderr: npt.ArrayLike = 0.0,
    u: npt.ArrayLike = MID_P,
) -> tuple[FloatArray, FloatArray]:
    """Bounds of the energy per image that a full evaluation would measure, from a part of it.

    The model. A part generated `images` kept images and `regenerated` more for the human filter,
    and measured `joules_per_image` (all its joules over its kept images, as the worker reports).
    Each generated image costs c joules at the part's batch composition, and `batch_ratio` x c at
    the full evaluation's (J per image at the full evaluation's batch sizes over the part's:
    below 1 when the full evaluation runs larger, more efficient batches; estimated or
    configured). Each attempt of an image fails the filter with a probability q and is
    regenerated, at most `max_retries` times, so a kept image costs 1 + rho(q) generated images
    on average, rho(q) = q + ... + q^R (`regenerations_per_image`). The true value bounded is the
    expected J per kept image of a full evaluation: batch_ratio x c x (1 + rho(q)).

    The evidence, on the log scale: log c is estimated by log(joules / (images + regenerated)),
    with standard error `relative_stderr` (the meter's and run-to-run noise of the part's energy,
    e.g. energy_stderr / energy across prompts, or a configured noise over sqrt(calls), with an
    estimated batch ratio's own relative error added in quadrature; 0 when exact). log(1 + rho(q))
    is estimated by log(1 + regenerated / images), and bounded through q's exact randomised test
    on the regeneration count (a sum of capped geometrics, tabulated exactly). The two parts are
    combined by the method of variance estimates recovery (MOVER: each side's distance from the
    estimate is the root of the sum of the parts' squared distances): exact when either part is
    certain (no noise; no retries), close to nominal when both matter. No kept image: [0, inf).
    """
    _check_error(error)
    measured, regen, noise, tie = np.broadcast_arrays(
        _floats(joules_per_image), _floats(regenerated), _floats(relative_stderr), _floats(u)
    )
    if images <= 0:
        return np.zeros(measured.shape), np.full(measured.shape, np.inf)
    base = np.log(np.maximum(batch_ratio * measured * images / (images + regen), 1e-300))
    realised = np.log1p(regen / images)
    if max_retries > 0:
        levels = np.stack([np.full(measured.shape, error), np.full(measured.shape, 1.0 - error)], axis=-1)
        rates = _rate_quantiles(regen, images, max_retries, tie, levels)
        cost = np.log1p(regenerations_per_image(rates, max_retries))
        low_cost, high_cost = cost[..., 0], cost[..., 1]
    else:
        low_cost = high_cost = np.zeros(measured.shape)
    spread = float(_stats().norm.isf(error)) * noise
    lower = np.exp(base + realised - _recovered(realised - low_cost, spread))
    upper = np.exp(base + realised + _recovered(high_cost - realised, spread))
    return np.where(measured > 0, lower, 0.0), np.where(measured > 0, upper, 0.0)


def energy_bounds(
    joules_per_image: float,
    images: int,
    regenerated: int,
    error: float,
    *,
    max_retries: int = 0,
    batch_ratio: float = 1.0,
    relative_stderr: float = 0.0,
    u: float = MID_P,
) -> Interval:
    """The full evaluation's energy per image, bounded from a part (`energy_bounds_array`)."""
    if regenerated < 0 or regenerated > images * max_retries:
        raise ValueError(f"{regenerated} regenerations cannot come from {images} images")
    lower, upper = energy_bounds_array(
        joules_per_image,
        images,
        regenerated,
        error,
        max_retries=max_retries,
        batch_ratio=batch_ratio,
        relative_stderr=relative_stderr,
        u=u,
    )
    return Interval(float(lower), float(upper))


# ----------------------------------------------------------------------------- error budget


def bonferroni(error: float, tests: int) -> float:
    """Each of `tests` decisions at error / tests: all hold together with probability >= 1 - error."""
    _check_error(error)
    if tests < 1:
        raise ValueError(f"at least one test, got {tests}")
    return error / tests


def holm_levels(error: float, tests: int) -> list[float]:
    """Holm's step-down levels: the i-th most significant of `tests` decisions (from 0) is taken
    at error / (tests - i), as long as every one before it was taken."""
    _check_error(error)
    return [error / (tests - i) for i in range(tests)]


def holm(p_values: Sequence[float], error: float) -> list[bool]:
    """Holm's step-down: which hypotheses are rejected (in the order given), with the family-wise
    error at most `error`. Sorted ascending, p_(i) is rejected while p_(j) <= error / (m - j) for
    every j <= i; the first that is not stops the procedure."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for level, index in zip(holm_levels(error, len(p_values)) if p_values else [], order, strict=True):
        if p_values[index] > level:
            break
        rejected[index] = True
    return rejected


def generation_error(error: float, generation: int, generations: int | None = None) -> float:
    """A search's error spent in generation `generation` (from 1), so the errors of all its
    generations sum to at most `error`: error / G when the number G of generations is known;
    otherwise error x 6 / (pi^2 g^2) (sum over g >= 1 is error), which spends more early, when
    the population changes most, and never runs out however long the search goes on."""
    _check_error(error)
    if generation < 1:
        raise ValueError(f"generations count from 1, got {generation}")
    if generations is not None:
        if generation > generations:
            raise ValueError(f"generation {generation} of {generations}")
        return error / generations
    return error * 6.0 / (math.pi**2 * generation**2)
