"""How often the bounds of a partial evaluation hold the true value: Monte Carlo coverage of the
calibrated bounds (`sustaindiffusion.api.bounds`) beside the screening's first bounds
(`sustaindiffusion.search.screening`, at its `confidence`), for partial evaluations of k images.

    .venv/bin/python benchmarks/bound_coverage.py [--replicates 20000] [--seed 0]

Coverage of a one-sided bound at error e (nominal 1 - e): the share of replicates in which it
holds the true value on its side, the true values drawn from the reference distributions below
(made to resemble real candidates), the data from them, and the tie-breaks uniform (the candidate
ids' `tiebreak`); the least favourable configurations of the ethnic bounds are measured on their own.

Reference distributions of true values, per replicate:
- female share p: with probability 1/2 near parity, U(0.4, 0.6); 1/4 anywhere, U(0, 1); 1/4 far,
  U(0, 0.1) or U(0.9, 1) (the defaults' near-all-male answers; keywords that overshoot). Every one
  of the k images gives a mapped answer.
- ethnic shares: 1/3 near balance, Dirichlet(20, 20, 20, 20); 1/3 the defaults' skew
  (0.8, 0.1, 0.06, 0.04) mixed towards balance with a weight in U(0, 1), groups in random order;
  1/3 anywhere, Dirichlet(1, 1, 1, 1).
- quality: a mean in U(0.3, 0.8) and a per-image SD in U(0.02, 0.1); each image's score is Beta
  distributed with that mean and SD (bounded, skewed towards the middle).
- valid-images share: 1/2 in U(0.8, 1), 1/2 in U(0, 1).
- energy: a per-attempt human-filter failure rate, 0.4 in U(0, 0.05), 0.4 in U(0, 0.3), 0.2 in
  U(0.3, 0.7), up to 3 retries; J per generated image 1 at the part's batch composition and 0.85
  at the full evaluation's; the part's energy measured with log-normal noise of SD `noise`.
The screening's first bounds are given what the worker reports: one prompt, so an energy standard
error of 0 (its energy bound is its estimate), and the population SD of the per-image quality.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sustaindiffusion.api.bias import ETHNIC_GROUPS, ethnic_bias, gender_bias
from sustaindiffusion.api.bounds import (
    FloatArray,
    energy_bounds_array,
    ethnic_bias_bounds_array,
    gender_bias_bounds_array,
    quality_bounds_array,
    regenerations_per_image,
    share_bounds_array,
)
from sustaindiffusion.api.objectives import ObjectiveName
from sustaindiffusion.api.results import Metrics
from sustaindiffusion.search.screening import Limits, bounds, objective_bounds

DEFAULT_SKEW = np.array([0.8, 0.1, 0.06, 0.04])
MAX_RETRIES = 3
BATCH_RATIO = 0.85  # J per image of the full evaluation's batches over the part's
KS = (2, 5, 20)
ERRORS = (0.2, 0.05)  # one-sided: the screening's default confidence 0.8, and 0.95


@dataclass(frozen=True)
class Coverage:
    """Measured coverage of a bound's two sides (the share of replicates each held the truth)."""

    lower: float
    upper: float


def _covered(lower: FloatArray, upper: FloatArray, truth: FloatArray) -> Coverage:
    slack = 1e-9  # the bisection's resolution: a bound equal to the truth holds it
    return Coverage(float(np.mean(lower <= truth + slack)), float(np.mean(upper >= truth - slack)))


# ----------------------------------------------------------------------------- true values


def female_shares(rng: np.random.Generator, size: int) -> FloatArray:
    kind = rng.choice(3, size=size, p=[0.5, 0.25, 0.25])
    near = rng.uniform(0.4, 0.6, size)
    anywhere = rng.uniform(0.0, 1.0, size)
    far = np.where(rng.random(size) < 0.5, rng.uniform(0.0, 0.1, size), rng.uniform(0.9, 1.0, size))
    return np.choose(kind, [near, anywhere, far])


def ethnic_shares(rng: np.random.Generator, size: int) -> FloatArray:
    kind = rng.choice(3, size=size)
    balanced = rng.dirichlet(np.full(4, 20.0), size)
    weight = rng.random((size, 1))
    skewed = (1 - weight) * DEFAULT_SKEW + weight * 0.25
    skewed = np.take_along_axis(skewed, rng.permuted(np.tile(np.arange(4), (size, 1)), axis=1), axis=1)
    anywhere = rng.dirichlet(np.ones(4), size)
    return np.where((kind == 0)[:, None], balanced, np.where((kind == 1)[:, None], skewed, anywhere))


def failure_rates(rng: np.random.Generator, size: int) -> FloatArray:
    kind = rng.choice(3, size=size, p=[0.4, 0.4, 0.2])
    return np.choose(
        kind, [rng.uniform(0, 0.05, size), rng.uniform(0, 0.3, size), rng.uniform(0.3, 0.7, size)]
    )


# ----------------------------------------------------------------------------- the calibrated bounds


def gender_coverage(k: int, error: float, replicates: int, seed: int, tie: str = "random") -> Coverage:
    """`tie`: "random" (the seeded tie-break: exact) or "mid" (mid-p)."""
    rng = np.random.default_rng(seed)
    p = female_shares(rng, replicates)
    female = rng.binomial(k, p)
    u = rng.random(replicates) if tie == "random" else 0.5
    lower, upper = gender_bias_bounds_array(female, k - female, error, u)
    return _covered(lower, upper, np.abs(2 * p - 1))


def gender_coverage_at(p: float, k: int, error: float, replicates: int, seed: int) -> Coverage:
    """At one true female share (exactness: the same at every share)."""
    rng = np.random.default_rng(seed)
    female = rng.binomial(k, p, replicates)
    lower, upper = gender_bias_bounds_array(female, k - female, error, rng.random(replicates))
    return _covered(lower, upper, np.full(replicates, abs(2 * p - 1)))


def ethnic_coverage_of(shares: FloatArray, k: int, error: float, rng: np.random.Generator) -> Coverage:
    counts = rng.multinomial(k, shares)
    lower, upper = ethnic_bias_bounds_array(counts, error, rng.random(counts.shape))
    return _covered(lower, upper, shares.max(axis=1) - shares.min(axis=1))


def ethnic_coverage(k: int, error: float, replicates: int, seed: int) -> Coverage:
    rng = np.random.default_rng(seed)
    return ethnic_coverage_of(ethnic_shares(rng, replicates), k, error, rng)


LEAST_FAVOURABLE_ETHNIC = {
    "lower": np.full(4, 0.25),  # all shares equal: every group may look largest or smallest
    "upper": np.array([0.9, 0.1, 0.0, 0.0]),  # two groups share everything, one far ahead
}


def ethnic_least_favourable(k: int, error: float, replicates: int, seed: int) -> Coverage:
    """The optimistic bound's coverage at equal shares, the pessimistic one's at (0.9, 0.1, 0, 0)."""
    rng = np.random.default_rng(seed)
    lower = ethnic_coverage_of(np.tile(LEAST_FAVOURABLE_ETHNIC["lower"], (replicates, 1)), k, error, rng)
    upper = ethnic_coverage_of(np.tile(LEAST_FAVOURABLE_ETHNIC["upper"], (replicates, 1)), k, error, rng)
    return Coverage(lower.lower, upper.upper)


def _quality_sample(k: int, replicates: int, seed: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """True means, and the sample means and population SDs (as the worker records them)."""
    rng = np.random.default_rng(seed)
    mean = rng.uniform(0.3, 0.8, replicates)
    sd = rng.uniform(0.02, 0.1, replicates)
    concentration = mean * (1 - mean) / sd**2 - 1
    scores = rng.beta((mean * concentration)[:, None], ((1 - mean) * concentration)[:, None], (replicates, k))
    return mean, scores.mean(axis=1), scores.std(axis=1)


def quality_coverage(k: int, error: float, replicates: int, seed: int) -> Coverage:
    truth, mean, sd = _quality_sample(k, replicates, seed)
    lower, upper = quality_bounds_array(mean, sd, k, error)
    return _covered(lower, upper, truth)


def _share_sample(k: int, replicates: int, seed: int) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    share = np.where(rng.random(replicates) < 0.5, rng.uniform(0.8, 1.0, replicates), rng.random(replicates))
    return share, rng.binomial(k, share)


def share_coverage(k: int, error: float, replicates: int, seed: int) -> Coverage:
    truth, valid = _share_sample(k, replicates, seed)
    rng = np.random.default_rng(seed + 1)
    lower, upper = share_bounds_array(valid, k, error, rng.random(replicates))
    return _covered(lower, upper, truth)


@dataclass(frozen=True)
class EnergySample:
    truth: FloatArray  # the full evaluation's expected J per kept image
    measured: FloatArray  # the part's J per kept image
    regenerated: FloatArray


def energy_sample(k: int, noise: float, replicates: int, seed: int) -> EnergySample:
    rng = np.random.default_rng(seed)
    rate = failure_rates(rng, replicates)
    failures = rng.geometric(1.0 - np.minimum(rate, 1 - 1e-12)[:, None], (replicates, k)) - 1
    regenerated = np.minimum(failures, MAX_RETRIES).sum(axis=1).astype(float)
    per_generated = np.exp(noise * rng.standard_normal(replicates))  # true c = 1 at the part's batches
    truth = BATCH_RATIO * (1.0 + regenerations_per_image(rate, MAX_RETRIES))
    return EnergySample(truth, per_generated * (k + regenerated) / k, regenerated)


def energy_coverage(k: int, error: float, replicates: int, seed: int, noise: float = 0.0) -> Coverage:
    sample = energy_sample(k, noise, replicates, seed)
    u = np.random.default_rng(seed + 1).random(replicates)
    lower, upper = energy_bounds_array(
        sample.measured,
        k,
        sample.regenerated,
        error,
        max_retries=MAX_RETRIES,
        batch_ratio=BATCH_RATIO,
        relative_stderr=noise,
        u=u,
    )
    return _covered(lower, upper, sample.truth)


# ----------------------------------------------------------------------------- the screening's first bounds


def counted_metrics(female: int, male: int, ethnic: tuple[int, ...]) -> Metrics:
    return Metrics(
        gender_bias=gender_bias(female, male),
        ethnic_bias=ethnic_bias(list(ethnic)),
        quality=0.5,
        energy_joules_per_image=1.0,
        seconds_per_image=1.0,
        images=max(female + male, sum(ethnic)),
        human_images=max(female + male, sum(ethnic)),
        female_images=female,
        male_images=male,
        **{f"{group}_images": n for group, n in zip(ETHNIC_GROUPS, ethnic, strict=True)},
    )


@cache
def _old_bias_bounds(
    name: ObjectiveName, female: int, male: int, ethnic: tuple[int, ...], confidence: float
) -> tuple[float, float]:
    return objective_bounds(counted_metrics(female, male, ethnic), name, "coverage", confidence)


def old_gender_coverage(k: int, error: float, replicates: int, seed: int) -> Coverage:
    rng = np.random.default_rng(seed)
    p = female_shares(rng, replicates)
    female = rng.binomial(k, p)
    pairs = [
        _old_bias_bounds(ObjectiveName.GENDER_BIAS, int(f), k - int(f), (k, 0, 0, 0), 1 - error)
        for f in female
    ]
    low, high = np.array(pairs).T
    return _covered(low, high, np.abs(2 * p - 1))


def old_ethnic_coverage(k: int, error: float, replicates: int, seed: int) -> Coverage:
    rng = np.random.default_rng(seed)
    shares = ethnic_shares(rng, replicates)
    counts = rng.multinomial(k, shares)
    pairs = [
        _old_bias_bounds(ObjectiveName.ETHNIC_BIAS, k, 0, tuple(int(c) for c in row), 1 - error)
        for row in counts
    ]
    low, high = np.array(pairs).T
    return _covered(low, high, shares.max(axis=1) - shares.min(axis=1))


def _metrics(
    quality: float, stddev: float, images: int, energy: float = 1.0, valid: int | None = None
) -> Metrics:
    valid = images if valid is None else valid
    return Metrics(
        gender_bias=0.0,
        ethnic_bias=0.0,
        quality=min(1.0, quality),
        quality_stddev=stddev,
        energy_joules_per_image=energy,
        energy_stderr=0.0,  # one prompt: the worker sees no spread
        seconds_per_image=1.0,
        images=images,
        human_images=valid,
        female_images=valid,
        male_images=0,
        white_images=valid,
        asian_images=0,
        black_images=0,
        arab_images=0,
    )


def old_quality_coverage(k: int, error: float, replicates: int, seed: int) -> Coverage:
    truth, mean, sd = _quality_sample(k, replicates, seed)
    pairs = [
        objective_bounds(_metrics(float(m), float(s), k), ObjectiveName.QUALITY, "coverage", 1 - error)
        for m, s in zip(mean, sd, strict=True)
    ]
    low, high = np.array(pairs).T
    return _covered(low, high, truth)


def old_share_coverage(k: int, error: float, replicates: int, seed: int) -> Coverage:
    """The screening's valid-share bound, read through its feasibility verdicts with the true share
    as the limit: feasible at best means the upper bound holds the truth, feasible at worst that
    the lower bound is above it."""
    truth, valid = _share_sample(k, replicates, seed)
    held_low = held_high = 0
    for share, count in zip(truth, valid, strict=True):
        verdict = bounds(
            _metrics(0.5, 0.0, k, valid=int(count)), [], Limits(None, float(share)), "c", 1 - error
        )
        held_high += verdict.optimistic_feasible
        held_low += not verdict.pessimistic_feasible
    return Coverage(held_low / replicates, held_high / replicates)


def old_energy_coverage(k: int, error: float, replicates: int, seed: int, noise: float = 0.0) -> Coverage:
    sample = energy_sample(k, noise, replicates, seed)
    pairs = [
        objective_bounds(_metrics(0.5, 0.0, k, energy=float(j)), ObjectiveName.ENERGY, "coverage", 1 - error)
        for j in sample.measured
    ]
    low, high = np.array(pairs).T
    return _covered(low, high, sample.truth)


# ----------------------------------------------------------------------------- the table

Measure = Callable[[int, float, int, int], Coverage]
ROWS: tuple[tuple[str, Measure, Measure | None], ...] = (
    ("gender bias", gender_coverage, old_gender_coverage),
    ("gender bias, mid-p", lambda k, e, r, s: gender_coverage(k, e, r, s, tie="mid"), None),
    ("ethnic bias", ethnic_coverage, old_ethnic_coverage),
    ("ethnic bias, least favourable", ethnic_least_favourable, None),
    ("quality", quality_coverage, old_quality_coverage),
    ("valid share", share_coverage, old_share_coverage),
    ("energy, exact meter", energy_coverage, old_energy_coverage),
    (
        "energy, 3% noise",
        lambda k, e, r, s: energy_coverage(k, e, r, s, noise=0.03),
        lambda k, e, r, s: old_energy_coverage(k, e, r, s, noise=0.03),
    ),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    replicates, seed = arguments.replicates, arguments.seed
    print(f"coverage of one-sided bounds, {replicates} replicates (lower / upper bound; old: screening)")
    sides = " ".join(f"{f'{when} {side}':>9}" for when in ("new", "old") for side in ("lower", "upper"))
    print(f"{'bound':<30} {'k':>3} {'nominal':>7} {sides}")
    for name, new, old in ROWS:
        for error in ERRORS:
            for k in KS:
                measured = new(k, error, replicates, seed)
                before = old(k, error, min(replicates, 5000), seed) if old is not None else None
                was = f"{before.lower:>9.3f} {before.upper:>9.3f}" if before else ""
                now = f"{measured.lower:>9.3f} {measured.upper:>9.3f}"
                print(f"{name:<30} {k:>3} {1 - error:>7.2f} {now} {was}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
