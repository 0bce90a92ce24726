"""What kind of statistic each objective is: how its value is merged across the parts of a
candidate's images, bounded from a partial evaluation, and computed from held-out per-prompt rows.

The objective registry (`api.objectives`) names one of each for every objective, beside its
direction, unit and normalisation; none has a default, so an objective without one is refused when
the registry is built (and by the type checker), never met at run time with a guess.

- Merge: the value over the images of two parts (`first`, then `rest`): a bias from the summed
  answer counts (`AnswerCounts`), a per-image value pooled by images (`PooledByImages`), or a mean
  of scores pooled by its scores (`PooledByScores`: quality, whose detector score is the mean over
  confident boxes, however many each image has). Each is exact: the merge of two parts is the
  value of one evaluation of both parts' images.
- Bound: `bounds` gives (low, high), the value at its best and worst plausible at a one-sided
  `confidence`; `credible` gives the equal-tailed interval the evidence itself carries, where it
  carries one (the status shows it); `has_evidence` says whether the value rests on evidence at all
  (a bias with no mapped answer is 1 by rule, and nothing can be said to improve on it). Biases
  from the Jeffreys posterior of the answer shares (`AnswerShares`), quality from the per-image
  spread (`ImageSpread`), energy and time from the standard error of the energy across prompts
  (`EnergySpread`: a single prompt shows no spread, and energy varies little between images of one
  setting). These are the screening's first bounds, kept as they were so that screened archives
  replay. `calibrated` gives the calibrated bounds (`api.bounds`) the adaptive evidence policy
  decides with: each side holds the true value with probability 1 - error (the biases from the
  credible sets of their answer shares, quality by Student t on the sample SD, energy and time with
  the regenerations the human filter made and the meter's noise, `Measurement`).
- HeldOut: the value from summed per-prompt rows (`prompt_table`), for any leading shape, and
  whether it rests on evidence: a bias from its summed counts (`PooledAnswers`), a per-image value
  or a mean of scores: a summed column over the summed images or scores (`PerCount`; rows that did
  not record their scores count one per image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sustaindiffusion.api.bias import ETHNIC_GROUPS, AnswerBias
from sustaindiffusion.api.bounds import energy_bounds_array, quality_bounds, share_bounds, tiebreak
from sustaindiffusion.api.intervals import holding

if TYPE_CHECKING:  # results imports the registry, which imports this module
    from sustaindiffusion.api.results import Metrics, PromptStats

# The columns of a held-out prompt's row that pool by summing (`PromptStats` fields).
PROMPT_COLUMNS = (
    "images",
    "human_images",
    "female_images",
    "male_images",
    *(f"{g}_images" for g in ETHNIC_GROUPS),
    "quality_sum",
    "joules",
    "seconds",
    "quality_scores",
)
COLUMN = {name: index for index, name in enumerate(PROMPT_COLUMNS)}
ENERGY_STREAM = 5  # the tie-break stream of the energy and time bounds (0 to 4: the biases')
VALID_SHARE_STREAM = 6


def _column(prompt: PromptStats, name: str) -> float:
    value = getattr(prompt, name)
    if value is None:  # a row written before its scores were counted: one per image
        value = prompt.images
    return float(value)


def prompt_table(prompts: Sequence[PromptStats]) -> np.ndarray:
    """[prompts, `PROMPT_COLUMNS`]: what pools by summing."""
    return np.array([[_column(p, name) for name in PROMPT_COLUMNS] for p in prompts])


@dataclass(frozen=True)
class Measurement:
    """What a calibrated bound needs beyond a result's own numbers: the human filter's retry cap
    (0: off), and the relative noise of the energy of one generate call of `call_images` images
    (the meter's and run to run; a result of n images averages n / `call_images` calls)."""

    max_retries: int = 0
    energy_noise: float = 0.0
    call_images: int = 1

    def relative_stderr(self, metrics: Metrics) -> float:
        calls = max(1.0, metrics.images / self.call_images)
        spread = metrics.energy_stderr or 0.0
        energy = metrics.energy_joules_per_image
        across_prompts = spread / energy if energy > 0 else 0.0
        return math.hypot(self.energy_noise / math.sqrt(calls), across_prompts)


def valid_share_bounds(metrics: Metrics, key: str, error: float) -> tuple[float, float]:
    """Calibrated bounds of the share of images that count for both biases (`api.bounds`)."""
    if not metrics.counted or not metrics.images:
        return 0.0, 1.0
    valid = min(metrics.gender_answers, metrics.ethnicity_answers)
    bounds = share_bounds(valid, metrics.images, error, tiebreak(key, VALID_SHARE_STREAM))
    return bounds.low, bounds.high


class Merge(Protocol):
    def __call__(self, first: Metrics, rest: Metrics, field: str) -> float:
        """The value (the `Metrics` field `field`) over the images of both parts."""


class Bound(Protocol):
    def bounds(self, metrics: Metrics, field: str, key: str, confidence: float) -> tuple[float, float]:
        """(low, high) raw values at the one-sided `confidence` on each side; `key` seeds any draws."""

    def credible(self, metrics: Metrics, field: str, key: str, level: float) -> tuple[float, float] | None:
        """The equal-tailed `level` interval the evidence carries, or None where it carries none."""

    def has_evidence(self, metrics: Metrics) -> bool:
        """Whether the value rests on evidence, not on a rule (results without counts: as recorded)."""

    def calibrated(
        self, metrics: Metrics, field: str, key: str, error: float, measurement: Measurement
    ) -> tuple[float, float]:
        """(low, high): each holds the true value (what a full evaluation estimates) on its side with
        probability at least 1 - `error` (`api.bounds`); `key` (the candidate id) fixes tie-breaks."""


class HeldOut(Protocol):
    def value(self, sums: np.ndarray) -> np.ndarray:
        """The value from summed rows (last axis: `PROMPT_COLUMNS`), for any leading shape."""

    def has_evidence(self, sums: np.ndarray) -> bool:
        """Whether the value of summed rows (one row) rests on evidence, not on a rule."""


def _pooled(first: Metrics, rest: Metrics, field: str) -> float:
    n1, n2 = first.images, rest.images
    return (n1 * float(getattr(first, field)) + n2 * float(getattr(rest, field))) / (n1 + n2)


@dataclass(frozen=True)
class PooledByImages:
    """A per-image value: the parts' values weighted by their images, capped at `ceiling`."""

    ceiling: float | None = None

    def __call__(self, first: Metrics, rest: Metrics, field: str) -> float:
        value = _pooled(first, rest, field)
        return value if self.ceiling is None else min(self.ceiling, value)


@dataclass(frozen=True)
class PooledByScores:
    """A mean of scores: the parts' values weighted by their scores (`Metrics.scores`), capped at
    `ceiling`; a part without scores adds none."""

    ceiling: float | None = None

    def __call__(self, first: Metrics, rest: Metrics, field: str) -> float:
        s1, s2 = first.scores, rest.scores
        value = (
            (s1 * float(getattr(first, field)) + s2 * float(getattr(rest, field))) / (s1 + s2)
            if s1 + s2
            else 0.0
        )
        return value if self.ceiling is None else min(self.ceiling, value)


@dataclass(frozen=True)
class AnswerCounts:
    """A bias recomputed from both parts' summed answer counts (pooled by images where a part
    recorded no counts: results older than them)."""

    bias: AnswerBias

    def __call__(self, first: Metrics, rest: Metrics, field: str) -> float:
        if not (first.counted and rest.counted):
            return _pooled(first, rest, field)
        return self.bias.of_counts(
            [int(getattr(first, name) or 0) + int(getattr(rest, name) or 0) for name in self.bias.fields]
        )


def _counts(metrics: Metrics, bias: AnswerBias) -> list[int]:
    return [int(getattr(metrics, name) or 0) for name in bias.fields]


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(confidence)


@dataclass(frozen=True)
class AnswerShares:
    """A bias bounded by its posterior: the credible interval at level 2c - 1 holds c on each side.
    Without counts the estimate is all there is; with no mapped answer it may be anything."""

    bias: AnswerBias

    def credible(self, metrics: Metrics, field: str, key: str, level: float) -> tuple[float, float] | None:
        counts = _counts(metrics, self.bias)
        if not metrics.counted or not sum(counts):
            return None  # no answer mapped: the bias is 1 by rule, not an estimate
        return holding(self.bias.interval(counts, key, level), float(getattr(metrics, field)))

    def bounds(self, metrics: Metrics, field: str, key: str, confidence: float) -> tuple[float, float]:
        value = float(getattr(metrics, field))
        if not metrics.counted:
            return value, value
        interval = self.credible(metrics, field, key, level=2 * confidence - 1)
        return interval if interval is not None else (0.0, 1.0)

    def has_evidence(self, metrics: Metrics) -> bool:
        return not metrics.counted or sum(_counts(metrics, self.bias)) > 0

    def calibrated(
        self, metrics: Metrics, field: str, key: str, error: float, measurement: Measurement
    ) -> tuple[float, float]:
        if not metrics.counted:
            value = float(getattr(metrics, field))
            return value, value  # recorded before the counts: the estimate is all there is
        return self.bias.bounds(_counts(metrics, self.bias), key, error)


class _SpreadBound:
    """A bound from a spread: no posterior to give an interval from, and a value always measured."""

    def credible(self, metrics: Metrics, field: str, key: str, level: float) -> tuple[float, float] | None:
        return None

    def has_evidence(self, metrics: Metrics) -> bool:
        return True


@dataclass(frozen=True)
class ImageSpread(_SpreadBound):
    """A per-image mean bounded by its standard error over the images, within [0, 1]."""

    def bounds(self, metrics: Metrics, field: str, key: str, confidence: float) -> tuple[float, float]:
        value = float(getattr(metrics, field))
        spread = _z(confidence) * (metrics.quality_stddev or 0.0) / math.sqrt(max(metrics.images, 1))
        return max(0.0, value - spread), min(1.0, value + spread)

    def calibrated(
        self, metrics: Metrics, field: str, key: str, error: float, measurement: Measurement
    ) -> tuple[float, float]:
        """Student t on the spread of the scores, with the images as the sample size: exact for
        one score per image; for the detector's boxes, which one image's boxes share, cautious (a
        mean over many correlated boxes is known no better than over independent images)."""
        spread = metrics.quality_stddev or 0.0
        bounds = quality_bounds(float(getattr(metrics, field)), spread, metrics.images, error)
        return bounds.low, bounds.high


@dataclass(frozen=True)
class EnergySpread(_SpreadBound):
    """A cost per image bounded by the relative standard error of the energy across prompts."""

    def bounds(self, metrics: Metrics, field: str, key: str, confidence: float) -> tuple[float, float]:
        value = float(getattr(metrics, field))
        energy = metrics.energy_joules_per_image
        relative = _z(confidence) * (metrics.energy_stderr or 0.0) / energy if energy > 0 else 0.0
        return max(0.0, value * (1 - relative)), value * (1 + relative)

    def calibrated(
        self, metrics: Metrics, field: str, key: str, error: float, measurement: Measurement
    ) -> tuple[float, float]:
        """The cost per kept image with the regenerations the human filter made and may make, and
        the meter's noise (`api.bounds.energy_bounds_array`); every part of a candidate generates in
        calls of the same size (`EvaluationTask.call_images`), so no batch ratio is needed."""
        retries = measurement.max_retries
        regenerated = min(metrics.regenerated_images or 0, metrics.images * retries)
        low, high = energy_bounds_array(
            float(getattr(metrics, field)),
            metrics.images,
            regenerated,
            error,
            max_retries=retries,
            relative_stderr=measurement.relative_stderr(metrics),
            u=tiebreak(key, ENERGY_STREAM),
        )
        return float(low), float(high)


@dataclass(frozen=True)
class PooledAnswers:
    """A bias from the summed answer counts of the prompts."""

    bias: AnswerBias

    def _columns(self, sums: np.ndarray) -> np.ndarray:
        return sums[..., [COLUMN[name] for name in self.bias.fields]]

    def value(self, sums: np.ndarray) -> np.ndarray:
        return self.bias.of_columns(self._columns(sums))

    def has_evidence(self, sums: np.ndarray) -> bool:
        return bool(self._columns(sums).sum() > 0)


@dataclass(frozen=True)
class PerCount:
    """A summed column over a summed count: the images generated (energy, time) or the scores the
    quality pooled (`PROMPT_COLUMNS`' quality_scores)."""

    column: str
    count: str

    def value(self, sums: np.ndarray) -> np.ndarray:
        counts = sums[..., COLUMN[self.count]]
        per_count = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
        result: np.ndarray = sums[..., COLUMN[self.column]] * per_count
        return result

    def has_evidence(self, sums: np.ndarray) -> bool:
        return True
