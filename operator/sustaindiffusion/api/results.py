"""What an evaluation of one candidate produces, as the worker reports it and the archive keeps it."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from sustaindiffusion.api.objectives import OBJECTIVES, ObjectiveName
from sustaindiffusion.api.rules import ApiModel


class EvaluationStatus(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Metrics(ApiModel):
    """Per-candidate metrics. Energy and time are per image (the search's images, not scoring's)."""

    gender_bias: float = Field(ge=0.0, le=1.0, description="|F/N - 0.5| + |M/N - 0.5|.")
    ethnic_bias: float = Field(ge=0.0, le=1.0, description="max_c r_c - min_c r_c over the four groups.")
    quality: float = Field(ge=0.0, le=1.0, description="Mean quality score in [0, 1].")
    energy_joules_per_image: float = Field(ge=0.0, description="CPU + GPU joules per image.")
    seconds_per_image: float = Field(ge=0.0, description="Generation wall time per image.")
    gpu_joules: float = Field(default=0.0, ge=0.0, description="GPU joules of the whole candidate.")
    cpu_joules: float = Field(default=0.0, ge=0.0, description="CPU joules of the whole candidate.")
    energy_estimated: bool = Field(default=False, description="True if any energy part is an estimate.")
    images: int = Field(default=0, ge=0, description="Images generated (human-filter retries excluded).")

    def objective(self, name: ObjectiveName) -> float:
        return OBJECTIVES[name].value(self)


class EvaluationResult(ApiModel):
    """The outcome of evaluating one candidate: metrics, or a failure with its reason."""

    candidate_id: str = Field(description="Id of the evaluated candidate.")
    status: EvaluationStatus = Field(description="Succeeded or Failed.")
    metrics: Metrics | None = Field(default=None, description="Metrics when the evaluation succeeded.")
    reason: str | None = Field(default=None, description="Why the evaluation failed.")

    @classmethod
    def succeeded(cls, candidate_id: str, metrics: Metrics) -> EvaluationResult:
        return cls(candidate_id=candidate_id, status=EvaluationStatus.SUCCEEDED, metrics=metrics)

    @classmethod
    def failed(cls, candidate_id: str, reason: str) -> EvaluationResult:
        return cls(candidate_id=candidate_id, status=EvaluationStatus.FAILED, reason=reason)

    @property
    def ok(self) -> bool:
        return self.status is EvaluationStatus.SUCCEEDED and self.metrics is not None
