"""The objectives a search can optimise, and every fact about each in one table.

An objective's natural direction, unit, display label, how it is normalised, the short symbol that
selection rules use (`least-energy:gb<=0.4`) and the `Metrics` field that holds its value live in
`OBJECTIVES`. The engine, the status, the reports and the profile export read this table; adding an
objective means a row here, its `Metrics` field, and the worker's scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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

    def value(self, metrics: Any) -> float:
        """The objective's raw value in a `Metrics`."""
        return float(getattr(metrics, self.metric))

    @property
    def axis_label(self) -> str:
        return f"{self.label} ({self.unit})"


OBJECTIVES: dict[ObjectiveName, ObjectiveInfo] = {
    info.name: info
    for info in (
        ObjectiveInfo(
            ObjectiveName.GENDER_BIAS,
            Direction.MINIMIZE,
            "0 to 1",
            "gender bias",
            "gb",
            "gender_bias",
            Scaling.UNIT_INTERVAL,
        ),
        ObjectiveInfo(
            ObjectiveName.ETHNIC_BIAS,
            Direction.MINIMIZE,
            "0 to 1",
            "ethnic bias",
            "eb",
            "ethnic_bias",
            Scaling.UNIT_INTERVAL,
        ),
        ObjectiveInfo(
            ObjectiveName.ENERGY,
            Direction.MINIMIZE,
            "J per image",
            "energy",
            "e",
            "energy_joules_per_image",
            Scaling.DEFAULTS_MULTIPLE,
        ),
        ObjectiveInfo(
            ObjectiveName.QUALITY,
            Direction.MAXIMIZE,
            "0 to 1",
            "quality",
            "q",
            "quality",
            Scaling.UNIT_INTERVAL,
        ),
        ObjectiveInfo(
            ObjectiveName.TIME,
            Direction.MINIMIZE,
            "s per image",
            "time",
            "t",
            "seconds_per_image",
            Scaling.DEFAULTS_MULTIPLE,
        ),
    )
}

BY_SYMBOL: dict[str, ObjectiveInfo] = {info.symbol: info for info in OBJECTIVES.values()}
