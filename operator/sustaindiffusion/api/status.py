"""The SustainSearch status: written by the operator, read by users, dashboards and reports.

It stays small at any scale: the full history lives in the evaluation archive, the front here is
capped at `spec.reporting.maxFrontEntries`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.rules import ApiModel

ObjectiveValues = Annotated[
    dict[str, float], Field(max_length=8, description="Objective values by objective name.")
]


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A condition, following the Kubernetes conventions (metav1.Condition)."""

    type: Annotated[str, Field(min_length=1, max_length=316)] = Field(
        description="Condition type, CamelCase."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(min_length=1, max_length=1024)] = Field(description="CamelCase reason.")
    message: Annotated[str, Field(max_length=32768)] = Field(
        default="", description="Human-readable details."
    )
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(default=None, ge=0, description="Spec generation seen.")


class FrontEntry(ApiModel):
    """One Pareto-optimal candidate."""

    candidate_id: Annotated[str, Field(max_length=64)] = Field(
        description="Stable id (hash of the settings)."
    )
    settings: CandidateSettings = Field(description="Decoded settings.")
    objectives: ObjectiveValues
    quality: float | None = Field(default=None, description="Quality score.")
    constraint_satisfied: bool = Field(description="Whether the quality constraint holds.")


class Baseline(ApiModel):
    """A reference configuration (the model's defaults, or one from spec.baselines) and its metrics."""

    name: Annotated[str, Field(max_length=63)] = Field(
        description="Baseline name; 'defaults' for the model's."
    )
    candidate_id: Annotated[str, Field(max_length=64)] = Field(description="Candidate id.")
    objectives: ObjectiveValues
    quality: float | None = Field(default=None, description="Quality score.")


class EvaluationCounters(ApiModel):
    """Evaluations by state."""

    total: int = Field(default=0, ge=0, description="Candidates asked so far.")
    succeeded: int = Field(default=0, ge=0, description="Candidates evaluated.")
    failed: int = Field(default=0, ge=0, description="Candidates that failed.")
    running: int = Field(default=0, ge=0, description="Candidates being evaluated.")


class EnergyTotals(ApiModel):
    """Energy of all evaluations so far."""

    total_joules: float = Field(default=0.0, ge=0.0, description="CPU + GPU joules.")
    gpu_joules: float = Field(default=0.0, ge=0.0, description="GPU joules.")
    cpu_joules: float = Field(default=0.0, ge=0.0, description="CPU joules.")
    estimated: bool = Field(default=False, description="True if any part is an estimate, not a measurement.")


class SustainSearchStatus(ApiModel):
    """Observed state of a SustainSearch."""

    phase: Phase = Field(default=Phase.PENDING, description="Pending, Running, Succeeded or Failed.")
    conditions: Annotated[list[Condition], Field(max_length=16)] | None = Field(
        default=None,
        description="Conditions (Kubernetes conventions).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation last acted on."
    )
    generation: int = Field(default=0, ge=0, description="Current search generation (0 is the baseline).")
    generation_progress: Annotated[str, Field(max_length=32)] | None = Field(
        default=None, description="Generation as done/total, for kubectl."
    )
    evaluations: EvaluationCounters | None = Field(default=None, description="Evaluation counters.")
    front: Annotated[list[FrontEntry], Field(max_length=500)] | None = Field(
        default=None, description="Pareto front, capped at spec.reporting.maxFrontEntries."
    )
    front_size: int | None = Field(default=None, ge=0, description="Size of the whole Pareto front.")
    hypervolume: float | None = Field(default=None, description="Hypervolume of the front (normalised).")
    baselines: Annotated[list[Baseline], Field(max_length=11)] | None = Field(
        default=None, description="Reference configurations and their metrics."
    )
    energy: EnergyTotals | None = Field(default=None, description="Energy totals.")
    start_time: str | None = Field(
        default=None, description="When the search started.", json_schema_extra={"format": "date-time"}
    )
    completion_time: str | None = Field(
        default=None, description="When the search finished.", json_schema_extra={"format": "date-time"}
    )
    message: Annotated[str, Field(max_length=4096)] | None = Field(default=None, description="Latest news.")
