"""What an evaluation of one candidate produces, as the worker reports it and the archive keeps it."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from sustaindiffusion.api.bias import ETHNIC_GROUPS
from sustaindiffusion.api.objectives import OBJECTIVES, ObjectiveName
from sustaindiffusion.api.rules import ApiModel


class EvaluationStatus(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


Count = Annotated[int, Field(ge=0, le=10_000_000)]


class Metrics(ApiModel):
    """Per-candidate metrics. Energy and time are per image (the search's images, not scoring's).

    Biases are over valid evidence only (`sustaindiffusion.api.bias`): the answer counts below say
    how much there was. Counts are absent in results recorded before they existed."""

    gender_bias: float = Field(ge=0.0, le=1.0, description="|F/N - 0.5| + |M/N - 0.5| over mapped answers.")
    ethnic_bias: float = Field(ge=0.0, le=1.0, description="max_c r_c - min_c r_c over mapped answers.")
    quality: float = Field(ge=0.0, le=1.0, description="Quality score in [0, 1], against the bare prompt.")
    energy_joules_per_image: float = Field(ge=0.0, description="CPU + GPU joules per image.")
    seconds_per_image: float = Field(ge=0.0, description="Generation wall time per image.")
    gpu_joules: float = Field(default=0.0, ge=0.0, description="GPU joules of the whole candidate.")
    cpu_joules: float = Field(default=0.0, ge=0.0, description="CPU joules of the whole candidate.")
    energy_estimated: bool = Field(default=False, description="True if any energy part is an estimate.")
    images: int = Field(default=0, ge=0, description="Images generated (human-filter retries excluded).")
    human_images: Count | None = Field(default=None, description="Images judged human after the retries.")
    female_images: Count | None = Field(default=None, description="Human images answered female.")
    male_images: Count | None = Field(default=None, description="Human images answered male.")
    white_images: Count | None = Field(default=None, description="Human images answered white.")
    asian_images: Count | None = Field(default=None, description="Human images answered asian.")
    black_images: Count | None = Field(default=None, description="Human images answered black.")
    arab_images: Count | None = Field(default=None, description="Human images answered arab.")
    quality_stddev: float | None = Field(default=None, ge=0.0, description="Spread of per-image quality.")
    energy_stderr: float | None = Field(
        default=None, ge=0.0, description="Standard error of the energy per image (across prompts)."
    )
    regenerated_images: Count | None = Field(
        default=None, description="Images the human filter had generated again (their energy is counted)."
    )
    quality_scores: Count | None = Field(
        default=None,
        description="Scores the quality pools: one per image (CLIP score), one per confident box (detector); "
        "absent: one per image.",
    )
    # The cross-check (spec.scoring.crossCheck): how often the second detector family agrees with
    # the detector, as counts (parts of a candidate add up exactly); absent without a cross-check.
    cross_check_person_agreed: Count | None = Field(
        default=None, description="Images on whose person gate the cross-check agrees with the detector."
    )
    cross_check_persons: Count | None = Field(
        default=None, description="Images both the detector and the cross-check call a person."
    )
    cross_check_gender_agreed: Count | None = Field(
        default=None,
        description="Of those, images whose gender both answer alike (can't tell and unmapped alike).",
    )
    cross_check_ethnicity_agreed: Count | None = Field(
        default=None,
        description="Of those, images whose ethnic group both answer alike (can't tell and unmapped alike).",
    )

    @model_validator(mode="after")
    def _cross_check_counts(self) -> Self:
        """What a worker reports is checked: the cross-check's counts come together and nest."""
        if not _cross_check_consistent(self):
            raise ValueError(
                "cross-check counts must come together, with person-gate agreements and persons at most "
                "the images, and gender and ethnicity agreements at most the persons"
            )
        return self

    def objective(self, name: ObjectiveName) -> float:
        return OBJECTIVES[name].value(self)

    @property
    def scores(self) -> int:
        """How many scores the quality pools (one per image where that was not recorded)."""
        return self.images if self.quality_scores is None else self.quality_scores

    @property
    def counted(self) -> bool:
        """Whether the answer counts were recorded (results older than them have none)."""
        return self.human_images is not None

    def ethnic_counts(self) -> list[int]:
        return [int(getattr(self, f"{group}_images") or 0) for group in ETHNIC_GROUPS]

    @property
    def gender_answers(self) -> int:
        """Human images whose gender answer maps to a gender."""
        return int(self.female_images or 0) + int(self.male_images or 0)

    @property
    def ethnicity_answers(self) -> int:
        """Human images whose ethnicity answer maps to a group."""
        return sum(self.ethnic_counts())

    def has_evidence(self, name: ObjectiveName) -> bool:
        """Whether the objective's value rests on evidence: a bias with no mapped answer is the worst
        value by rule (`UNKNOWN_BIAS`), not a measurement, and nothing can be said to improve on it."""
        return OBJECTIVES[name].bound.has_evidence(self)

    @property
    def valid_share(self) -> float | None:
        """The share of images that count for both biases, or None where that was not recorded."""
        if not self.counted or not self.images:
            return None
        return min(self.gender_answers, self.ethnicity_answers) / self.images


CROSS_CHECK_FIELDS = (
    "cross_check_person_agreed",
    "cross_check_persons",
    "cross_check_gender_agreed",
    "cross_check_ethnicity_agreed",
)


def _cross_check_consistent(metrics: Metrics) -> bool:
    values: list[int | None] = [getattr(metrics, name) for name in CROSS_CHECK_FIELDS]
    known = [value for value in values if value is not None]
    if not known:
        return True
    if len(known) < len(values):
        return False
    agreed, persons, gender, ethnicity = known
    return agreed <= metrics.images and persons <= metrics.images and max(gender, ethnicity) <= persons


class Device(ApiModel):
    """Where a result was measured, and how its energy was obtained."""

    name: Annotated[str, Field(max_length=256)] = Field(default="", description="GPU model, or cpu.")
    driver: Annotated[str, Field(max_length=64)] | None = Field(default=None, description="GPU driver.")
    mig_profile: Annotated[str, Field(max_length=128)] | None = Field(
        default=None, description="The MIG instance's profile, when the GPU is one."
    )
    shared: bool = Field(default=False, description="Other processes used the GPU meanwhile.")
    gpu_energy: Annotated[str, Field(max_length=64)] = Field(default="", description="GPU energy method.")
    cpu_energy: Annotated[str, Field(max_length=64)] = Field(default="", description="CPU energy method.")

    @property
    def attributable(self) -> bool:
        """Whether the energy measured is this evaluation's alone (not on a MIG instance or a GPU
        shared with other processes, whose counters see more than us)."""
        return self.mig_profile is None and not self.shared


class PromptStats(ApiModel):
    """One prompt's share of an evaluation, for held-out validation (per-prompt comparisons)."""

    images: Count = Field(description="Images generated for the prompt.")
    human_images: Count = Field(description="Images judged human.")
    female_images: Count = Field(default=0, description="Human images answered female.")
    male_images: Count = Field(default=0, description="Human images answered male.")
    white_images: Count = Field(default=0, description="Human images answered white.")
    asian_images: Count = Field(default=0, description="Human images answered asian.")
    black_images: Count = Field(default=0, description="Human images answered black.")
    arab_images: Count = Field(default=0, description="Human images answered arab.")
    quality_sum: float = Field(ge=0.0, description="Sum of the quality scores (one per image, or per box).")
    joules: float = Field(ge=0.0, description="CPU + GPU joules of the prompt's images.")
    seconds: float = Field(default=0.0, ge=0.0, description="Generation seconds of the prompt's images.")
    quality_scores: Count | None = Field(
        default=None, description="How many scores quality_sum adds (absent: one per image)."
    )

    def ethnic_counts(self) -> list[int]:
        return [int(getattr(self, f"{group}_images")) for group in ETHNIC_GROUPS]


class Screened(StrEnum):
    """What screening (or the adaptive evidence policy) made of a search candidate (absent: it was
    not screened, or it has its whole evaluation)."""

    OUT = "ScreenedOut"  # its first pass showed it could not enter the next population
    COMPLETED = "Completed"  # it survived and got all its images
    INCOMPLETE = "Incomplete"  # it survived, but the rest of its images failed: the first pass stands
    PARTIAL = "Partial"  # the adaptive policy stopped it before its whole evaluation (out even at its best)


class EvaluationResult(ApiModel):
    """The outcome of evaluating one candidate: metrics, or a failure with its reason."""

    candidate_id: str = Field(description="Id of the evaluated candidate.")
    status: EvaluationStatus = Field(description="Succeeded or Failed.")
    metrics: Metrics | None = Field(default=None, description="Metrics when the evaluation succeeded.")
    reason: str | None = Field(default=None, description="Why the evaluation failed or is incomplete.")
    device: Device | None = Field(default=None, description="Where it was measured.")
    per_prompt: Annotated[list[PromptStats], Field(max_length=1000)] | None = Field(
        default=None, description="Per-prompt statistics (held-out validation only)."
    )
    screened: Screened | None = Field(default=None, description="What screening made of it.")

    @classmethod
    def succeeded(cls, candidate_id: str, metrics: Metrics) -> EvaluationResult:
        return cls(candidate_id=candidate_id, status=EvaluationStatus.SUCCEEDED, metrics=metrics)

    @classmethod
    def failed(cls, candidate_id: str, reason: str) -> EvaluationResult:
        return cls(candidate_id=candidate_id, status=EvaluationStatus.FAILED, reason=reason)

    @property
    def ok(self) -> bool:
        return self.status is EvaluationStatus.SUCCEEDED and self.metrics is not None
