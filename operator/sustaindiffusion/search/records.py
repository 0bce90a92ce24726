"""The evaluation archive's record format: one JSON object per line, with named keys and versions.

    {"format": 2, "engine": {"sustaindiffusion": "0.2.0", "pymoo": "0.6.2"}, "generation": 3,
     "result": {"candidateId": "…", "status": "Succeeded", "metrics": {"genderBias": 0.35, …}}}

Both stores (the operator's ConfigMap chunks and the local runner's archive.jsonl) read and write
records here only. Floats are written exactly (JSON's shortest round-trip form), and the engine is
told the record as it reads back, so a replay sees exactly what the live engine saw. The format is
independent of the worker's termination message, which may change without touching archives.

Format 3 is format 2 written by an engine whose candidate ids are canonical settings
(`CandidateSettings.canonical`); an archive begun in format 1 or 2 replays with the ids it was
recorded with (`uses_canonical_ids`), whatever format later appends write.

Format 1, the termination message's positional row (`{"g": 3, "r": [id, 1, gb, eb, …]}`), written
before format 2 existed, is still read: such archives replay unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import Field, ValidationError, field_validator

from sustaindiffusion.api.results import EvaluationResult, Metrics
from sustaindiffusion.api.rules import ApiModel
from sustaindiffusion.api.task import Part

FORMAT = 3
READABLE_FORMATS = (2, 3)  # with named keys; format 1 is read apart


class RecordError(ValueError):
    """A line that is not an archive record; the message says why."""


class EngineVersion(ApiModel):
    """The code that produced a record: a replay by other versions may ask other candidates."""

    sustaindiffusion: str = Field(description="Version of the sustaindiffusion package.")
    pymoo: str = Field(description="Version of pymoo.")


@cache
def current_engine_version() -> EngineVersion:
    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "unknown"

    return EngineVersion(sustaindiffusion=installed("sustaindiffusion"), pymoo=installed("pymoo"))


class ArchiveRecord(ApiModel):
    """One told result, with the generation whose batch evaluated it."""

    format: int = Field(default=FORMAT, description="Record format version.")
    engine: EngineVersion | None = Field(
        default_factory=current_engine_version, description="Versions that produced the record."
    )
    generation: int = Field(ge=0, description="Search generation of the evaluation.")
    part: Part = Field(
        default=Part.WHOLE,
        alias="stage",
        description="The part of the search the result belongs to (`Part`); absent: a candidate's whole "
        "evaluation. Archives call it the stage: screen and rest (a screened candidate's images, whose "
        "final result is the engine's merge), evidence, validation (the held-out evaluation at the end).",
    )
    result: EvaluationResult = Field(description="The evaluation's outcome.")
    batch: int | None = Field(
        default=None,
        ge=0,
        description="The adaptive policy's sequential batch of the generation (batch only).",
    )

    @field_validator("part", mode="before")
    @classmethod
    def _absent_is_whole(cls, value: Any) -> Any:
        return Part.WHOLE if value is None else value

    def to_line(self) -> str:
        exclude = {"part"} if self.part is Part.WHOLE else None  # a whole evaluation names no stage
        return self.model_dump_json(by_alias=True, exclude_none=True, exclude=exclude)

    @property
    def stage(self) -> str | None:
        """The part as the archive spells it: None for a candidate's whole evaluation."""
        return None if self.part is Part.WHOLE else self.part.value

    @classmethod
    def from_line(cls, line: str) -> ArchiveRecord:
        try:
            payload = json.loads(line)
        except json.JSONDecodeError as error:
            raise RecordError(f"not JSON: {error.msg}") from None
        if not isinstance(payload, dict):
            raise RecordError("not a JSON object")
        if "format" not in payload and {"g", "r"} <= payload.keys():
            return _from_format_1(payload)
        if payload.get("format") not in READABLE_FORMATS:
            raise RecordError(f"unknown record format {payload.get('format')!r} (this code reads 1 to 3)")
        try:
            return cls.model_validate(payload)
        except ValidationError as error:
            raise RecordError(f"invalid record: {_first_error(error)}") from None

    @property
    def candidate_id(self) -> str:
        return self.result.candidate_id

    @property
    def key(self) -> str:
        return record_key(self.part, self.generation, self.candidate_id, self.batch or 0)


def record_key(part: Part, generation: int, candidate_id: str, batch: int = 0) -> str:
    """What makes a record unique in an archive: a candidate is evaluated once per part (its first
    screening, when a later generation asks it again, is reused, never repeated); a front point gets
    more evidence at most once per generation; the adaptive policy gives a candidate at most one
    part per sequential batch of a generation."""
    if part is Part.EVIDENCE:
        return f"evidence:{generation}:{candidate_id}"
    if part is Part.BATCH:
        return f"batch:{generation}:{batch}:{candidate_id}"
    return candidate_id if part is Part.WHOLE else f"{part.value}:{candidate_id}"


def uses_canonical_ids(records: Sequence[ArchiveRecord]) -> bool:
    """Whether the search of these records identifies candidates by canonical settings: yes for a
    new archive; an archive keeps the identity of its first record."""
    return not records or records[0].format >= 3


def parse_lines(text: str) -> list[ArchiveRecord]:
    """Every record of a chunk of lines (blank lines skipped); RecordError names the bad line."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(ArchiveRecord.from_line(line))
            except RecordError as error:
                raise RecordError(f"line {number}: {error}") from None
    return records


def _first_error(error: ValidationError) -> str:
    details = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in details["loc"])
    return f"{location}: {details['msg']}" if location else details["msg"]


def _from_format_1(payload: dict[str, object]) -> ArchiveRecord:
    """`{"g": generation, "r": [id, 1, gb, eb, q, J/img, s/img, gpu J, cpu J, estimated, images]}`
    or `{"g": generation, "r": [id, 0, reason, retryable]}`."""
    row, generation = payload["r"], payload["g"]
    if not isinstance(row, list) or not isinstance(generation, int):
        raise RecordError('invalid format-1 record: expected {"g": int, "r": [...]}')
    try:
        candidate_id, ok = str(row[0]), bool(row[1])
        if ok:
            gb, eb, q, epi, spi, gj, cj, est, n = row[2:11]
            metrics = Metrics(
                gender_bias=gb,
                ethnic_bias=eb,
                quality=q,
                energy_joules_per_image=epi,
                seconds_per_image=spi,
                gpu_joules=gj,
                cpu_joules=cj,
                energy_estimated=bool(est),
                images=int(n),
            )
            result = EvaluationResult.succeeded(candidate_id, metrics)
        else:
            result = EvaluationResult.failed(candidate_id, str(row[2]))
    except (ValueError, TypeError, IndexError) as error:
        raise RecordError(f"invalid format-1 record: {error}") from None
    return ArchiveRecord(format=1, engine=None, generation=generation, result=result)
