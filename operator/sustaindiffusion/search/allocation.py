"""The adaptive evidence policy's decisions, pure: a candidate's values as calibrated bounds from
the images it has, whether it could still enter the next population (or the front: `off_front`),
and whether a front point's values are known to the precision asked.

A candidate is judged at a one-sided error per bound (`api.bounds`, through each objective's row
of the registry: `Bound.calibrated`): its optimistic values (the best its true values plausibly
are), its pessimistic ones, and whether it is feasible at its best and at its worst.

Out of the next population: at least `places` (the population size) points rank strictly ahead of
the candidate's optimistic values in NSGA-II's non-dominated sorting (feasible points before
infeasible ones), counting the others as surely as they are known: a point with its whole
evaluation at its estimate (what NSGA-II is told of it), a point with part of one at its
pessimistic values. If every bound of the candidate holds, its true values are no better than its
optimistic ones, and it could not enter the next population on a whole evaluation either. The
error is spent (`error_per_bound`) by Bonferroni over the candidate's bounds (each objective and
each constraint that can fail) and over the looks it may get before its evaluation is whole (one
per batch), so the probability that any of them misleads one decision is at most the policy's
`error`; each generation decides with its own. The others' bounds are taken at the same error per
bound, without a share of the budget: the decision needs `places` of them ahead, so one failing
bound rarely changes it (the engine-level test measures the rate of wrong discards).

Precision: each objective's two-sided interval (each side at `PRECISION_ERROR`: 90%) is at most
the width asked, on the hypervolume's scale (biases as they are; energy and time over twice the
defaults').
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from sustaindiffusion.api.objectives import OBJECTIVES, ObjectiveName
from sustaindiffusion.api.results import EvaluationResult, Metrics
from sustaindiffusion.api.statistics import Measurement, valid_share_bounds
from sustaindiffusion.search.reference import Reference

PRECISION_ERROR = 0.05  # each side of the intervals a front point's precision is judged by


@dataclass(frozen=True)
class Judged:
    """A candidate's objectives as NSGA-II minimises them (raw scale) at its estimate, at its best
    and at its worst plausible values, and its constraints (`g <= 0` met) at its best."""

    estimate: tuple[float, ...]
    optimistic: tuple[float, ...]
    pessimistic: tuple[float, ...]
    feasible: bool  # by its estimate
    feasible_at_best: bool
    feasible_at_worst: bool
    constraints_at_best: tuple[float, ...]


def bounds_per_decision(reference: Reference) -> int:
    """The bounds a decision rests on: one per objective, and one per constraint that can fail on
    evidence (quality and valid images; the GPU model is a fact, not an estimate)."""
    constraints = reference.spec.constraints
    return (
        len(reference.spec.objectives)
        + (reference.quality_threshold is not None)
        + constraints.valid_images.enabled
    )


def error_per_bound(error: float, bounds: int, looks: int) -> float:
    """Bonferroni over a decision's bounds and the looks it may get: all hold with probability at
    least 1 - `error`."""
    if not 0.0 < error < 1.0:
        raise ValueError(f"an error rate is in (0, 1), got {error}")
    return error / (max(1, bounds) * max(1, looks))


def judge(result: EvaluationResult, reference: Reference, measurement: Measurement, error: float) -> Judged:
    """The result's values at its estimate and its calibrated bounds, each at one-sided `error`."""
    metrics = result.metrics
    if metrics is None or reference.scales is None:
        raise ValueError("only a measured result of a fixed reference is judged")
    key = result.candidate_id
    estimate, optimistic, pessimistic = [], [], []
    for scale in reference.scales:
        info = OBJECTIVES[scale.name]
        low, high = info.bound.calibrated(metrics, info.metric, key, error, measurement)
        best, worst = (low, high) if scale.best <= scale.worst else (high, low)
        estimate.append(scale.minimised(info.value(metrics)))
        optimistic.append(scale.minimised(best))
        pessimistic.append(scale.minimised(worst))
    estimated = reference.constraint_values(result)
    at_best, at_worst = list(estimated), list(estimated)
    if reference.quality_threshold is not None:
        low, high = _quality_bounds(metrics, key, error, measurement)
        at_best[0], at_worst[0] = reference.quality_threshold - high, reference.quality_threshold - low
    valid_images = reference.spec.constraints.valid_images
    if valid_images.enabled and metrics.counted and metrics.images:
        low, high = valid_share_bounds(metrics, key, error)
        at_best[1], at_worst[1] = valid_images.min_share - high, valid_images.min_share - low
    return Judged(
        estimate=tuple(estimate),
        optimistic=tuple(optimistic),
        pessimistic=tuple(pessimistic),
        feasible=all(g <= 0 for g in estimated),
        feasible_at_best=all(g <= 0 for g in at_best),
        feasible_at_worst=all(g <= 0 for g in at_worst),
        constraints_at_best=tuple(at_best),
    )


def _quality_bounds(
    metrics: Metrics, key: str, error: float, measurement: Measurement
) -> tuple[float, float]:
    info = OBJECTIVES[ObjectiveName.QUALITY]
    return info.bound.calibrated(metrics, info.metric, key, error, measurement)


def out_of_population(candidate: Judged, ahead: Sequence[tuple[Sequence[float], bool]], places: int) -> bool:
    """Whether at least `places` of the points `ahead` (values, feasible) rank strictly ahead of
    the candidate at its best: feasible points all come before an infeasible one."""
    feasible = [list(values) for values, ok in ahead if ok]
    if len(feasible) < places:
        return False
    if not candidate.feasible_at_best:
        return True
    matrix = np.array([*feasible, list(candidate.optimistic)], dtype=float)
    _, rank = NonDominatedSorting().do(matrix, return_rank=True)
    return int(np.sum(rank[:-1] < rank[-1])) >= places


def off_front(candidate: Judged, front: Sequence[Sequence[float]]) -> bool:
    """Whether a front point (at its estimate) is at least as good as the candidate at its best in
    every objective: if every bound of the candidate holds, its true values are no better than
    that point's estimate in any objective."""
    best = candidate.optimistic
    return any(all(f <= b for f, b in zip(point, best, strict=True)) for point in front)


def precise(result: EvaluationResult, reference: Reference, measurement: Measurement, width: float) -> bool:
    """Whether each objective's 90% interval is at most `width` wide on the hypervolume's scale."""
    metrics = result.metrics
    if metrics is None or reference.scales is None:
        return True  # nothing more to learn of a failure
    for scale in reference.scales:
        info = OBJECTIVES[scale.name]
        low, high = info.bound.calibrated(
            metrics, info.metric, result.candidate_id, PRECISION_ERROR, measurement
        )
        if abs(scale.normalise(high) - scale.normalise(low)) > width:
            return False
    return True
