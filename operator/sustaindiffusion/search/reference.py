"""What the evaluation of the model's defaults fixes for the rest of a search: the objective scales
(energy and time relative to the defaults'), the quality threshold, the GPU model measured objectives
are compared on; and from them, over the ledger, which results are feasible, the values NSGA-II is
told, the front and its hypervolume.

Before the defaults are evaluated the reference is unfixed: no scales, no threshold, no front.
A `Reference` never changes; the engine replaces the unfixed one when generation 0 completes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.objectives import OBJECTIVES
from sustaindiffusion.api.results import EvaluationResult, Metrics, Screened
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.search.ledger import Candidate, Ledger
from sustaindiffusion.search.objectives import ObjectiveScale, hypervolume, non_dominated, objective_scales

DEFAULTS_BASELINE = "defaults"  # the name of the model's default settings among the baselines
DEFAULTS_ID = CandidateSettings().candidate_id()
FAILURE_VIOLATION = 1e6  # constraint violation told for a failed evaluation: worse than any real one
CONSTRAINTS = ("quality", "validImages", "sameDevice")  # the order of constraint_values
PARTIAL_EVIDENCE = (Screened.OUT, Screened.PARTIAL)  # results that rest on part of a whole evaluation


@dataclass(frozen=True)
class FrontPoint:
    candidate: Candidate
    metrics: Metrics
    objectives: dict[str, float]
    device: str | None = None  # the GPU model it was measured on


@dataclass(frozen=True)
class Reference:
    spec: SustainSearchSpec
    scales: tuple[ObjectiveScale, ...] | None = None  # None: the defaults are not evaluated yet
    quality_threshold: float | None = None
    defaults_device: str | None = None  # the GPU model energy and time are compared on

    @classmethod
    def of_defaults(cls, spec: SustainSearchSpec, defaults: EvaluationResult) -> Reference | None:
        """The reference the defaults' result fixes; None when they could not be evaluated."""
        if defaults.metrics is None:
            return None
        quality = spec.constraints.quality
        return cls(
            spec,
            tuple(objective_scales(spec.objectives, defaults.metrics)),
            (1.0 - quality.tolerance) * defaults.metrics.quality if quality.enabled else None,
            defaults.device.name if defaults.device is not None else None,
        )

    @property
    def fixed(self) -> bool:
        return self.scales is not None

    def _scales(self) -> tuple[ObjectiveScale, ...]:
        if self.scales is None:
            raise RuntimeError("objective scales are set once the baseline generation completes")
        return self.scales

    def objective_values(self, metrics: Metrics) -> list[float]:
        """Raw values, in the spec's order."""
        return [metrics.objective(o.name) for o in self.spec.objectives]

    def minimised(self, metrics: Metrics) -> list[float]:
        """Values as NSGA-II minimises them."""
        return [s.minimised(v) for s, v in zip(self._scales(), self.objective_values(metrics), strict=True)]

    def normalised(self, objectives: Mapping[str, float]) -> list[float]:
        """Objective values (by name, in the spec's order) scaled to 0 (best) .. 1 (worst)."""
        return [s.normalise(objectives[s.name.value]) for s in self._scales()]

    def constraint_values(self, result: EvaluationResult) -> list[float]:
        """The result's constraints, `g <= 0` when met, in `CONSTRAINTS` order: quality at least the
        threshold; enough valid images; measured on the defaults' GPU model (when energy or time is
        an objective). What was not recorded (results older than the counts) counts as met."""
        metrics = result.metrics
        if metrics is None:
            return [FAILURE_VIOLATION, 0.0, 0.0]
        constraints = self.spec.constraints
        quality = self.quality_threshold - metrics.quality if self.quality_threshold is not None else -1.0
        share = metrics.valid_share
        valid = (
            constraints.valid_images.min_share - share
            if constraints.valid_images.enabled and share is not None
            else -1.0
        )
        device = result.device.name if result.device is not None else None
        compared = constraints.same_device and any(OBJECTIVES[o.name].measured for o in self.spec.objectives)
        other_device = (
            compared
            and device is not None
            and self.defaults_device is not None
            and device != self.defaults_device
        )
        return [quality, valid, 1.0 if other_device else -1.0]

    def feasible(self, result: EvaluationResult) -> bool:
        return result.metrics is not None and all(g <= 0 for g in self.constraint_values(result))

    def told_values(self, result: EvaluationResult) -> tuple[list[float], list[float]]:
        """What NSGA-II is told of a result: its minimised objectives (zeros for a failure, which
        its constraint violation keeps behind every real result) and its constraints."""
        objectives = (
            self.minimised(result.metrics)
            if result.metrics is not None
            else [0.0] * len(self.spec.objectives)
        )
        return objectives, self.constraint_values(result)

    def front(self, ledger: Ledger, before: int | None = None) -> list[FrontPoint]:
        """Non-dominated feasible results of the search (of the generations before `before`; the
        baselines are reported beside it, the screened out left aside); empty while unfixed."""
        points = self._feasible_search_points(ledger, before)
        if not points or self.scales is None:
            return []
        matrix = np.array(
            [[s.minimised(v) for s, v in zip(self.scales, values, strict=True)] for _, values in points]
        )
        front = [points[i] for i in sorted(non_dominated(matrix))]
        return [
            FrontPoint(
                candidate=ledger.candidate(result.candidate_id),
                metrics=result.metrics,
                objectives={o.name.value: v for o, v in zip(self.spec.objectives, values, strict=True)},
                device=result.device.name if result.device is not None else None,
            )
            for result, values in front
            if result.metrics is not None
        ]

    def hypervolume(self, ledger: Ledger) -> float:
        points = self._feasible_search_points(ledger)
        if not points or self.scales is None:
            return 0.0
        scales = self.scales
        normalised = np.array(
            [[s.normalise(v) for s, v in zip(scales, values, strict=True)] for _, values in points]
        )
        return hypervolume(normalised)

    def _feasible_search_points(
        self, ledger: Ledger, before: int | None = None
    ) -> list[tuple[EvaluationResult, list[float]]]:
        points = []
        for candidate_id in ledger.search_ids(before):
            result = ledger.result(candidate_id)
            if result is None or result.metrics is None or result.screened in PARTIAL_EVIDENCE:
                continue  # an estimate from part of a whole evaluation: never a front point
            if self.feasible(result):
                points.append((result, self.objective_values(result.metrics)))
        return points
