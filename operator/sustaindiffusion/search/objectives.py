"""Normalisation of objective values and the hypervolume indicator.

Normalisation uses explicit bounds recorded once per search, never bounds pooled from the data
seen so far (those move, and a moving yardstick makes hypervolumes incomparable):
- gender and ethnic bias and quality live in [0, 1] by definition;
- energy and time are scaled by twice the model defaults' value measured in generation 0.
Normalised values put the best bound at 0 and the worst at 1 whatever the direction; the
hypervolume reference point is 1.1 in every objective, so points on the worst bound still count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from sustaindiffusion.api.objectives import OBJECTIVES, Direction, ObjectiveName, Scaling
from sustaindiffusion.api.results import Metrics
from sustaindiffusion.api.spec import Objective

REFERENCE_POINT_VALUE = 1.1
MEASURED_SCALE_FACTOR = 2.0


@dataclass(frozen=True)
class ObjectiveScale:
    """Maps raw values of one objective to [0, 1]: `best` to 0 and `worst` to 1."""

    name: ObjectiveName
    direction: Direction
    best: float
    worst: float

    def normalise(self, value: float) -> float:
        return (value - self.best) / (self.worst - self.best)

    def minimised(self, value: float) -> float:
        """The value as pymoo minimises it: negated when the objective is maximised."""
        return -value if self.direction is Direction.MAXIMIZE else value


def objective_scales(objectives: Sequence[Objective], defaults: Metrics) -> list[ObjectiveScale]:
    """Scales for the spec's objectives; `defaults` are the model-default settings' metrics."""
    scales = []
    for objective in objectives:
        direction = objective.effective_direction
        if OBJECTIVES[objective.name].scaling is Scaling.DEFAULTS_MULTIPLE:
            measured = defaults.objective(objective.name)
            upper = MEASURED_SCALE_FACTOR * measured if measured > 0 else 1.0
            low, high = 0.0, upper
        else:
            low, high = 0.0, 1.0
        best, worst = (low, high) if direction is Direction.MINIMIZE else (high, low)
        scales.append(ObjectiveScale(objective.name, direction, best, worst))
    return scales


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of a minimisation matrix."""
    if len(points) == 0:
        return np.array([], dtype=int)
    return np.asarray(NonDominatedSorting().do(points, only_non_dominated_front=True), dtype=int)


def hypervolume(normalised: np.ndarray) -> float:
    """Hypervolume of normalised points (0 best, 1 worst) against the reference point 1.1."""
    if len(normalised) == 0:
        return 0.0
    reference = np.full(normalised.shape[1], REFERENCE_POINT_VALUE)
    inside = normalised[np.all(normalised < reference, axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(HV(ref_point=reference)(inside))
