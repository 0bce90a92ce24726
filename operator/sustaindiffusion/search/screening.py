"""Multi-fidelity screening: which of a generation's new candidates get the rest of their images.

Each new candidate is first evaluated on the first k images per prompt. Its optimistic bounds
(the best its true values plausibly are, at the one-sided `confidence`) are then placed among what
is already sure: the current population's point estimates (full image budget) and the other new
candidates' pessimistic bounds. If at least `population size` of those rank strictly ahead of it
(NSGA-II's non-dominated sorting, feasible before infeasible), it could not enter the next
population even at its best, nor be on the front, and it is screened out with its partial
estimates; the others get the rest of their images, and their two parts are merged.

Bounds: the biases from the answer counts (the Jeffreys posterior of `intervals`, equal-tailed at
level 2c - 1, so each side holds c); quality from the per-image spread, energy and time from the
standard error across prompts (normal approximation; a single prompt shows no energy spread, and
its energy bound is its estimate: energy varies little between images of one setting); the
valid-images share from its Jeffreys Beta posterior.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from sustaindiffusion.api.bias import ETHNIC_GROUPS, ethnic_bias, gender_bias
from sustaindiffusion.api.objectives import ObjectiveName
from sustaindiffusion.api.results import Metrics
from sustaindiffusion.search.intervals import DRAWS, PRIOR, bias_intervals, generator
from sustaindiffusion.search.objectives import ObjectiveScale

_COUNT_FIELDS = ("human_images", "female_images", "male_images", *(f"{g}_images" for g in ETHNIC_GROUPS))


@dataclass(frozen=True)
class Limits:
    """The constraints a screened candidate's bounds are checked against."""

    quality_threshold: float | None  # None: no quality constraint
    min_valid_share: float | None  # None: no valid-images constraint
    other_device: bool = False  # measured on another GPU model than the defaults: infeasible for sure


@dataclass(frozen=True)
class Bounds:
    """A screened candidate at its best and at its worst plausible values (minimised, raw scale)."""

    optimistic: list[float]
    pessimistic: list[float]
    optimistic_feasible: bool
    pessimistic_feasible: bool


@dataclass(frozen=True)
class SurePoint:
    """A point already known well enough: a population member's estimate at full fidelity."""

    values: list[float]  # minimised, raw scale
    feasible: bool


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(confidence)


def _share_bounds(successes: int, trials: int, key: str, confidence: float) -> tuple[float, float]:
    draws = generator(f"share:{key}").beta(successes + PRIOR, trials - successes + PRIOR, DRAWS)
    low, high = np.percentile(draws, [100 * (1 - confidence), 100 * confidence])
    return float(low), float(high)


def objective_bounds(
    metrics: Metrics, name: ObjectiveName, key: str, confidence: float
) -> tuple[float, float]:
    """The objective's (low, high) raw values at the one-sided `confidence` on each side."""
    value = metrics.objective(name)
    z = _z(confidence)
    if name in (ObjectiveName.GENDER_BIAS, ObjectiveName.ETHNIC_BIAS):
        if not metrics.counted:
            return value, value
        interval = bias_intervals(metrics, key, level=2 * confidence - 1).get(name.value)
        return interval if interval is not None else (0.0, 1.0)  # no mapped answer: anything
    if name is ObjectiveName.QUALITY:
        spread = z * (metrics.quality_stddev or 0.0) / math.sqrt(max(metrics.images, 1))
        return max(0.0, value - spread), min(1.0, value + spread)
    energy = metrics.energy_joules_per_image
    relative = z * (metrics.energy_stderr or 0.0) / energy if energy > 0 else 0.0
    return max(0.0, value * (1 - relative)), value * (1 + relative)  # time: energy's relative spread


def bounds(
    metrics: Metrics, scales: Sequence[ObjectiveScale], limits: Limits, key: str, confidence: float
) -> Bounds:
    optimistic, pessimistic = [], []
    for scale in scales:
        low, high = objective_bounds(metrics, scale.name, key, confidence)
        best, worst = (low, high) if scale.best <= scale.worst else (high, low)
        optimistic.append(scale.minimised(best))
        pessimistic.append(scale.minimised(worst))
    feasible_at_best = feasible_at_worst = not limits.other_device
    if limits.quality_threshold is not None:
        low, high = objective_bounds(metrics, ObjectiveName.QUALITY, key, confidence)
        feasible_at_best &= high >= limits.quality_threshold
        feasible_at_worst &= low >= limits.quality_threshold
    if limits.min_valid_share is not None and metrics.counted and metrics.images:
        valid = min(metrics.gender_answers, metrics.ethnicity_answers)
        low, high = _share_bounds(valid, metrics.images, key, confidence)
        feasible_at_best &= high >= limits.min_valid_share
        feasible_at_worst &= low >= limits.min_valid_share
    return Bounds(optimistic, pessimistic, feasible_at_best, feasible_at_worst)


def screened_out(screened: Mapping[str, Bounds], sure: Sequence[SurePoint], places: int) -> set[str]:
    """The candidates that even at their best rank behind at least `places` points known to be
    ahead: the feasible `sure` points and the other candidates' pessimistic bounds."""
    out = set()
    for candidate_id, candidate in screened.items():
        ahead = [p.values for p in sure if p.feasible] + [
            other.pessimistic
            for other_id, other in screened.items()
            if other_id != candidate_id and other.pessimistic_feasible
        ]
        if len(ahead) < places:
            continue
        if not candidate.optimistic_feasible:
            out.add(candidate_id)  # feasible points all come before an infeasible one
            continue
        matrix = np.array([*ahead, candidate.optimistic], dtype=float)
        _, rank = NonDominatedSorting().do(matrix, return_rank=True)
        if int(np.sum(rank[:-1] < rank[-1])) >= places:
            out.add(candidate_id)
    return out


def merged(first: Metrics, rest: Metrics) -> Metrics:
    """One candidate's metrics over the images of both parts: counts, joules and seconds add, the
    biases are recomputed from the summed counts, quality and its spread are pooled by images."""
    n1, n2 = first.images, rest.images
    n = n1 + n2
    if n1 == 0 or n2 == 0:
        return first if n2 == 0 else rest

    def pooled(a: float, b: float) -> float:
        return (n1 * a + n2 * b) / n

    quality = pooled(first.quality, rest.quality)
    stddev = None
    if first.quality_stddev is not None and rest.quality_stddev is not None:
        variance = (
            n1 * (first.quality_stddev**2 + (first.quality - quality) ** 2)
            + n2 * (rest.quality_stddev**2 + (rest.quality - quality) ** 2)
        ) / n
        stddev = math.sqrt(max(variance, 0.0))
    stderr = None
    if first.energy_stderr is not None and rest.energy_stderr is not None:
        stderr = math.hypot(n1 * first.energy_stderr, n2 * rest.energy_stderr) / n
    update: dict[str, object] = {
        "quality": min(1.0, quality),
        "quality_stddev": stddev,
        "energy_stderr": stderr,
        "gpu_joules": first.gpu_joules + rest.gpu_joules,
        "cpu_joules": first.cpu_joules + rest.cpu_joules,
        "energy_joules_per_image": pooled(first.energy_joules_per_image, rest.energy_joules_per_image),
        "seconds_per_image": pooled(first.seconds_per_image, rest.seconds_per_image),
        "energy_estimated": first.energy_estimated or rest.energy_estimated,
        "images": n,
    }
    if first.counted and rest.counted:
        counts = {
            name: int(getattr(first, name) or 0) + int(getattr(rest, name) or 0) for name in _COUNT_FIELDS
        }
        update |= counts
        update["gender_bias"] = gender_bias(counts["female_images"], counts["male_images"])
        update["ethnic_bias"] = ethnic_bias([counts[f"{g}_images"] for g in ETHNIC_GROUPS])
    else:
        update |= {name: None for name in _COUNT_FIELDS}
        update["gender_bias"] = pooled(first.gender_bias, rest.gender_bias)
        update["ethnic_bias"] = pooled(first.ethnic_bias, rest.ethnic_bias)
    return first.model_copy(update=update)
