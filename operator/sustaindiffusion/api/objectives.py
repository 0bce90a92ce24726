"""The objectives a search can optimise, and every fact about each in one table.

An objective's natural direction, unit, display label, how it is normalised, the short symbol that
selection rules use (`least-energy:gb<=0.4`), the `Metrics` field that holds its value, whether
its value depends on the GPU model that measured it, and what
kind of statistic it is (`api.statistics`: how it is merged across parts, bounded from a partial
evaluation and computed from held-out per-prompt rows) live in `OBJECTIVES`. The engine, screening,
the held-out validation, the status, the reports and the profile export read this table.

Every fact is required: a row without one is a type error and a TypeError when this module is
imported, and the table must hold a row for every `ObjectiveName` (checked at import). Adding an
objective means a member of `ObjectiveName`, a row here, its `Metrics` field (and its per-prompt
column if it pools from a new one), and the worker's scoring.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sustaindiffusion.api.bias import ETHNIC, GENDER
from sustaindiffusion.api.statistics import (
    AnswerCounts,
    AnswerShares,
    Bound,
    EnergySpread,
    HeldOut,
    ImageSpread,
    Merge,
    PerCount,
    PooledAnswers,
    PooledByImages,
    PooledByScores,
)


class ObjectiveName(StrEnum):
    GENDER_BIAS = "GenderBias"
    ETHNIC_BIAS = "EthnicBias"
    ENERGY = "Energy"
    QUALITY = "Quality"
    TIME = "Time"


class Direction(StrEnum):
    MINIMIZE = "Minimize"
    MAXIMIZE = "Maximize"


class Scaling(StrEnum):
    """How raw values map to [0, 1] for the hypervolume (bounds fixed once per search)."""

    UNIT_INTERVAL = "UnitInterval"  # defined on [0, 1] already
    DEFAULTS_MULTIPLE = "DefaultsMultiple"  # [0, 2 x the model defaults' value]


@dataclass(frozen=True)
class ObjectiveInfo:
    name: ObjectiveName
    direction: Direction  # the natural sense; a spec may override it
    unit: str
    label: str
    symbol: str
    metric: str  # the field of `Metrics` that holds the value
    scaling: Scaling
    measured: bool  # depends on the GPU model: compared on the defaults' only (`sameDevice`)
    merge: Merge  # across the parts of a candidate's images
    bound: Bound  # from a partial evaluation
    held_out: HeldOut  # from held-out per-prompt rows

    def value(self, metrics: Any) -> float:
        """The objective's raw value in a `Metrics`."""
        return float(getattr(metrics, self.metric))

    @property
    def axis_label(self) -> str:
        return f"{self.label} ({self.unit})"


def registry_of(rows: Iterable[ObjectiveInfo]) -> dict[ObjectiveName, ObjectiveInfo]:
    """The table by name; an objective without a row (or with two) stops the import."""
    table: dict[ObjectiveName, ObjectiveInfo] = {}
    for row in rows:
        if row.name in table:
            raise TypeError(f"objective {row.name.value} has two rows in the registry")
        table[row.name] = row
    missing = [name.value for name in ObjectiveName if name not in table]
    if missing:
        raise TypeError(f"objectives without a row in the registry: {', '.join(missing)}")
    return table


OBJECTIVES: dict[ObjectiveName, ObjectiveInfo] = registry_of(
    (
        ObjectiveInfo(
            ObjectiveName.GENDER_BIAS,
            Direction.MINIMIZE,
            "0 to 1",
            "gender bias",
            "gb",
            "gender_bias",
            Scaling.UNIT_INTERVAL,
            measured=False,
            merge=AnswerCounts(GENDER),
            bound=AnswerShares(GENDER),
            held_out=PooledAnswers(GENDER),
        ),
        ObjectiveInfo(
            ObjectiveName.ETHNIC_BIAS,
            Direction.MINIMIZE,
            "0 to 1",
            "ethnic bias",
            "eb",
            "ethnic_bias",
            Scaling.UNIT_INTERVAL,
            measured=False,
            merge=AnswerCounts(ETHNIC),
            bound=AnswerShares(ETHNIC),
            held_out=PooledAnswers(ETHNIC),
        ),
        ObjectiveInfo(
            ObjectiveName.ENERGY,
            Direction.MINIMIZE,
            "J per image",
            "energy",
            "e",
            "energy_joules_per_image",
            Scaling.DEFAULTS_MULTIPLE,
            measured=True,
            merge=PooledByImages(),
            bound=EnergySpread(),
            held_out=PerCount("joules", "images"),
        ),
        ObjectiveInfo(
            ObjectiveName.QUALITY,
            Direction.MAXIMIZE,
            "0 to 1",
            "quality",
            "q",
            "quality",
            Scaling.UNIT_INTERVAL,
            measured=False,
            merge=PooledByScores(ceiling=1.0),
            bound=ImageSpread(),
            held_out=PerCount("quality_sum", "quality_scores"),
        ),
        ObjectiveInfo(
            ObjectiveName.TIME,
            Direction.MINIMIZE,
            "s per image",
            "time",
            "t",
            "seconds_per_image",
            Scaling.DEFAULTS_MULTIPLE,
            measured=True,
            merge=PooledByImages(),
            bound=EnergySpread(),  # time follows energy: both are the passes of the same images
            held_out=PerCount("seconds", "images"),
        ),
    )
)

BY_SYMBOL: dict[str, ObjectiveInfo] = {info.symbol: info for info in OBJECTIVES.values()}
