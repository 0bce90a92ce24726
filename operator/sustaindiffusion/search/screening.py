"""Multi-fidelity screening: which of a generation's new candidates get the rest of their images.

Each new candidate is first evaluated on the first k images per prompt. Its optimistic bounds
(the best its true values plausibly are, at the one-sided `confidence`) are then placed among what
is already sure: the current population's point estimates (full image budget) and the other new
candidates' pessimistic bounds. If at least `population size` of those rank strictly ahead of it
(NSGA-II's non-dominated sorting, feasible before infeasible), it could not enter the next
population even at its best, nor be on the front, and it is screened out with its partial
estimates; the others get the rest of their images, and their two parts are merged.

Bounds: each objective's own (`api.statistics`, named by its registry row: the biases from the
Jeffreys posterior of their answer shares, quality from the per-image spread, energy and time
from the standard error across prompts); the valid-images share from its Jeffreys Beta posterior.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from sustaindiffusion.api.intervals import DRAWS, PRIOR, generator
from sustaindiffusion.api.objectives import OBJECTIVES, ObjectiveName
from sustaindiffusion.api.results import Metrics
from sustaindiffusion.search.objectives import ObjectiveScale


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


def _share_bounds(successes: int, trials: int, key: str, confidence: float) -> tuple[float, float]:
    draws = generator(f"share:{key}").beta(successes + PRIOR, trials - successes + PRIOR, DRAWS)
    low, high = np.percentile(draws, [100 * (1 - confidence), 100 * confidence])
    return float(low), float(high)


def objective_bounds(
    metrics: Metrics, name: ObjectiveName, key: str, confidence: float
) -> tuple[float, float]:
    """The objective's (low, high) raw values at the one-sided `confidence` on each side."""
    info = OBJECTIVES[name]
    return info.bound.bounds(metrics, info.metric, key, confidence)


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
