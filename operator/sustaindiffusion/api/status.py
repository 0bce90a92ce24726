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


class Interval(ApiModel):
    """A 95% interval."""

    low: float = Field(description="Low end.")
    high: float = Field(description="High end.")


class FrontEntry(ApiModel):
    """One Pareto-optimal candidate (in-sample: the search's own images)."""

    candidate_id: Annotated[str, Field(max_length=64)] = Field(
        description="Stable id (hash of the settings)."
    )
    settings: CandidateSettings = Field(description="Decoded settings.")
    objectives: ObjectiveValues
    change_percent: ObjectiveValues | None = Field(
        default=None,
        description="In-sample change of each objective against the model's defaults, in % (optimistic: "
        "see .status.validation for held-out changes).",
    )
    quality: float | None = Field(default=None, description="Quality score.")
    images: int | None = Field(default=None, description="Images the values rest on.")
    intervals: Annotated[dict[str, Interval], Field(max_length=8)] | None = Field(
        default=None,
        description="95% credible interval of each bias from its answer counts (Jeffreys prior); "
        "energy and quality have none.",
    )
    valid_share: float | None = Field(default=None, description="Share of images counting for the biases.")
    cross_check_disagreement: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="With spec.scoring.crossCheck: the largest share of images on which the two detector "
        "families disagree (person, gender or ethnicity); absent without a cross-check.",
    )
    device: Annotated[str, Field(max_length=256)] | None = Field(default=None, description="GPU model.")
    constraint_satisfied: bool = Field(description="Whether every constraint holds.")


class Baseline(ApiModel):
    """A reference configuration (the model's defaults, or one from spec.baselines) and its metrics."""

    name: Annotated[str, Field(max_length=63)] = Field(
        description="Baseline name; 'defaults' for the model's."
    )
    candidate_id: Annotated[str, Field(max_length=64)] = Field(description="Candidate id.")
    objectives: ObjectiveValues
    quality: float | None = Field(default=None, description="Quality score.")
    valid_share: float | None = Field(default=None, description="Share of images counting for the biases.")
    device: Annotated[str, Field(max_length=256)] | None = Field(default=None, description="GPU model.")


class HeldOutValue(ApiModel):
    """An objective on the held-out prompts and seeds, with a 95% bootstrap interval over prompts."""

    value: float = Field(description="Over all held-out images.")
    low: float = Field(description="95% interval, low end.")
    high: float = Field(description="95% interval, high end.")
    change_percent: float | None = Field(
        default=None, description="Change against the defaults on the same images, in %."
    )
    change_low: float | None = Field(default=None, description="95% interval of the change, low end.")
    change_high: float | None = Field(default=None, description="95% interval of the change, high end.")


class ValidationPoint(ApiModel):
    """One validated configuration: the defaults or a front point."""

    candidate_id: Annotated[str, Field(max_length=64)] = Field(description="Candidate id.")
    role: Annotated[str, Field(max_length=64)] = Field(
        description="defaults, knee, best <objective>, or spread (chosen to span the front)."
    )
    objectives: Annotated[dict[str, HeldOutValue], Field(max_length=8)] | None = Field(
        default=None, description="Held-out values by objective."
    )
    in_sample: ObjectiveValues | None = Field(default=None, description="The search's (in-sample) values.")
    wins: int | None = Field(
        default=None,
        ge=0,
        description="Prompts where it dominates the defaults (better in one objective, worse in none).",
    )
    pareto: int | None = Field(
        default=None, ge=0, description="Prompts where it trades or ties with the defaults."
    )
    losses: int | None = Field(default=None, ge=0, description="Prompts where the defaults dominate it.")
    sign_test_p: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Sign test of wins against losses over the held-out prompts (exact, two-sided).",
    )
    conclusion: Annotated[str, Field(max_length=512)] | None = Field(
        default=None, description="What the wins, trades and losses support at the 5% level."
    )
    valid_share: float | None = Field(default=None, description="Share of held-out images counting for bias.")
    reason: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="Why its held-out evaluation failed."
    )


class ValidationStatus(ApiModel):
    """Held-out validation of the front (spec.validation)."""

    prompts: int = Field(ge=0, description="Held-out prompts.")
    images_per_prompt: int = Field(ge=0, description="Images per prompt and point.")
    complete: bool = Field(description="Every point was evaluated.")
    points: Annotated[list[ValidationPoint], Field(max_length=21)] = Field(
        default_factory=list, description="The defaults first, then the front points."
    )


class EvaluationCounters(ApiModel):
    """Evaluations by state."""

    total: int = Field(default=0, ge=0, description="Candidates asked so far.")
    succeeded: int = Field(default=0, ge=0, description="Candidates evaluated.")
    failed: int = Field(default=0, ge=0, description="Candidates that failed.")
    running: int = Field(default=0, ge=0, description="Candidates being evaluated.")


class ScreeningStatus(ApiModel):
    """What multi-fidelity screening did so far (spec.algorithm.screening)."""

    screened: int = Field(default=0, ge=0, description="Search candidates screened so far.")
    screened_out: int = Field(
        default=0, ge=0, description="Screened out after their first images (kept with those estimates)."
    )
    incomplete: int = Field(
        default=0, ge=0, description="Survivors whose rest of images failed (their first pass stands)."
    )
    images_saved: int = Field(default=0, ge=0, description="Images the screened-out did not generate.")


class EnergyTotals(ApiModel):
    """Energy of all evaluations so far."""

    total_joules: float = Field(default=0.0, ge=0.0, description="CPU + GPU joules.")
    gpu_joules: float = Field(default=0.0, ge=0.0, description="GPU joules.")
    cpu_joules: float = Field(default=0.0, ge=0.0, description="CPU joules.")
    estimated: bool = Field(default=False, description="True if any part is an estimate, not a measurement.")
    attributable: bool = Field(
        default=True,
        description="False if some energy was measured on a MIG instance or a shared GPU, where the "
        "counters see more than the search's own work.",
    )


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
        default=None,
        description="Pareto front, capped at spec.reporting.maxFrontEntries; in-sample values (the search's "
        "own prompts and seeds).",
    )
    front_size: int | None = Field(default=None, ge=0, description="Size of the whole Pareto front.")
    hypervolume: float | None = Field(default=None, description="Hypervolume of the front (normalised).")
    baselines: Annotated[list[Baseline], Field(max_length=11)] | None = Field(
        default=None, description="Reference configurations and their metrics."
    )
    quality_threshold: float | None = Field(
        default=None, description="The least quality a candidate needs (from the defaults' quality)."
    )
    devices: Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=16)] | None = Field(
        default=None, description="The GPU models results were measured on."
    )
    validation: ValidationStatus | None = Field(default=None, description="Held-out validation of the front.")
    energy: EnergyTotals | None = Field(default=None, description="Energy totals.")
    screening: ScreeningStatus | None = Field(default=None, description="Screening so far, when on.")
    start_time: str | None = Field(
        default=None, description="When the search started.", json_schema_extra={"format": "date-time"}
    )
    completion_time: str | None = Field(
        default=None, description="When the search finished.", json_schema_extra={"format": "date-time"}
    )
    message: Annotated[str, Field(max_length=4096)] | None = Field(default=None, description="Latest news.")
