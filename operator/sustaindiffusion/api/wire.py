"""The compact report a worker pod leaves in its termination message, and how it is read back.

Kubernetes keeps at most 4096 bytes of a container's termination message, so results travel as
short JSON arrays; `encode_report` measures the size and refuses to exceed the budget (the caller
then says so plainly instead of losing results silently).

    {"v": 1, "g": generation, "s": shard, "d": device, "e": [gpu method, cpu method],
     "dv": driver, "mg": MIG profile, "sh": 1 if the GPU was shared,    # optional
     "r": [[id, 1, <the Metrics fields in declaration order>],   # bools as 0/1, absent counts null
           [id, 0, reason, retryable], ...],
     "p": {id: [[<the PromptStats fields in declaration order>], ...]},   # optional: validation
     "x": fatal error or null}

The device facts are the shard's (one pod, one device); every result read back carries them.

A succeeded row lists `Metrics`' fields in the order the model declares them, so a field added to
`Metrics` (with a default) travels without touching this module; rows shorter than today's (an older
worker) take the defaults, longer ones (a newer worker) keep what this code knows. So a row ends at
its last field that is not null (trailing fields whose default is null are left out: a result
without a cross-check, say, spends no bytes on its counts). Removing or reordering a field needs a
new `WIRE_VERSION`.

Decoding is total: whatever the text (a hostile or broken worker, a log tail, arbitrary bytes), the
result is a `ShardReport` or a `ReportError` with the reason, never another exception. Metrics must be
finite and in range, and when the caller names the shard's candidates, every result must be one
of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sustaindiffusion.api.results import Device, EvaluationResult, EvaluationStatus, Metrics, PromptStats

WIRE_VERSION = 1
TERMINATION_MESSAGE_LIMIT = 4096
REASON_LIMIT = 160
MESSAGE_READ_LIMIT = 64 * 1024  # no report is longer; anything longer is refused unread
CANDIDATE_ID = r"^[0-9a-f]{16}$"
METRIC_FIELDS = tuple(Metrics.model_fields)
PROMPT_FIELDS = tuple(PromptStats.model_fields)
_ABSENT_BY_DEFAULT = tuple(
    info.default is None and info.default_factory is None for info in Metrics.model_fields.values()
)


class ReportError(ValueError):
    """A termination message that is not a usable worker report; the message says why."""


class ReportTooLargeError(ValueError):
    """The results of a shard do not fit in a termination message."""


@dataclass
class ShardReport:
    generation: int
    shard: int
    results: list[EvaluationResult] = field(default_factory=list)
    retryable: dict[str, bool] = field(default_factory=dict)  # candidate id -> whether a retry may help
    device: Device = field(default_factory=Device)  # where the shard ran (its results carry it)
    fatal: str | None = None


# ----------------------------------------------------------------------------- encoding


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _wire_value(value: object) -> object:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return _round(value)
    return value


def _encode_result(result: EvaluationResult, retryable: bool, reason_limit: int) -> list[object]:
    metrics = result.metrics
    if result.status is EvaluationStatus.SUCCEEDED and metrics is not None:
        values = [_wire_value(getattr(metrics, name)) for name in METRIC_FIELDS]
        while values and values[-1] is None and _ABSENT_BY_DEFAULT[len(values) - 1]:
            values.pop()  # read back as the default it is: a field a result lacks costs no bytes
        return [result.candidate_id, 1, *values]
    return [result.candidate_id, 0, (result.reason or "unknown failure")[:reason_limit], int(retryable)]


def encode_report(report: ShardReport, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """Compact JSON of the report, within `limit` bytes; long failure reasons are shortened first."""
    device = report.device
    for reason_limit in (REASON_LIMIT, 60, 20):
        payload: dict[str, object] = {
            "v": WIRE_VERSION,
            "g": report.generation,
            "s": report.shard,
            "d": device.name[:64],
            "e": [device.gpu_energy, device.cpu_energy],
            "r": [
                _encode_result(r, report.retryable.get(r.candidate_id, False), reason_limit)
                for r in report.results
            ],
            "x": report.fatal[: reason_limit * 4] if report.fatal else None,
        }
        payload |= {k: v for k, v in (("dv", device.driver), ("mg", device.mig_profile)) if v}
        if device.shared:
            payload["sh"] = 1
        per_prompt = {
            r.candidate_id: [[_wire_value(getattr(p, name)) for name in PROMPT_FIELDS] for p in r.per_prompt]
            for r in report.results
            if r.per_prompt
        }
        if per_prompt:
            payload["p"] = per_prompt
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        size = len(text.encode())
        if size <= limit:
            return text
    raise ReportTooLargeError(
        f"the results of {len(report.results)} candidates need {size} bytes, over the {limit}-byte "
        "termination-message limit: lower spec.execution.candidatesPerPod"
    )


# ----------------------------------------------------------------------------- decoding

CandidateId = Annotated[str, Field(pattern=CANDIDATE_ID)]
Flag = Literal[0, 1]
Reason = Annotated[str, Field(max_length=4 * REASON_LIMIT)]
_FAILED_ROW = TypeAdapter(tuple[CandidateId, Literal[0], Reason, Flag])


class _Envelope(BaseModel):
    """The report's outer shape; rows are checked one by one below."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, strict=True)

    v: Literal[1]
    g: Annotated[int, Field(ge=0, le=10_000_000)]
    s: Annotated[int, Field(ge=0, le=1_000_000)]
    d: Annotated[str, Field(max_length=256)] = ""
    e: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=2)] = []
    dv: Annotated[str, Field(max_length=64)] | None = None
    mg: Annotated[str, Field(max_length=128)] | None = None
    sh: Literal[0, 1] = 0
    r: Annotated[list[list[Any]], Field(max_length=1024)] = []
    p: Annotated[dict[str, Annotated[list[list[Any]], Field(max_length=1000)]], Field(max_length=64)] = {}
    x: Annotated[str, Field(max_length=4096)] | None = None


def decode_report(
    text: str | bytes,
    *,
    generation: int | None = None,
    shard: int | None = None,
    members: Collection[str] | None = None,
) -> ShardReport:
    """Read a worker's termination message. `generation`, `shard` and `members` (the shard's
    candidate ids), when given, must match what the report claims. Raises only ReportError."""
    try:
        return _decode(text, generation, shard, members)
    except ReportError:
        raise
    except Exception as error:  # a decoder that can raise anything else can wedge its caller
        raise ReportError(f"termination message is not a worker report ({type(error).__name__})") from None


def _decode(
    text: str | bytes, generation: int | None, shard: int | None, members: Collection[str] | None
) -> ShardReport:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not text.strip():
        raise ReportError("the termination message is empty: the worker left no report")
    if len(text) > MESSAGE_READ_LIMIT:
        raise ReportError(f"the termination message has {len(text)} characters, more than any report")
    try:
        envelope = _Envelope.model_validate_json(text)
    except ValidationError as error:
        reason = _why(error)
        raise ReportError(
            f"termination message is not a version-{WIRE_VERSION} worker report: {reason}"
        ) from None
    if generation is not None and envelope.g != generation:
        raise ReportError(f"the report is for generation {envelope.g}, not {generation}")
    if shard is not None and envelope.s != shard:
        raise ReportError(f"the report is for shard {envelope.s}, not {shard}")
    methods = [*envelope.e, "", ""]
    device = Device(
        name=envelope.d,
        driver=envelope.dv,
        mig_profile=envelope.mg,
        shared=bool(envelope.sh),
        gpu_energy=methods[0],
        cpu_energy=methods[1],
    )
    report = ShardReport(generation=envelope.g, shard=envelope.s, device=device, fatal=envelope.x)
    seen: set[str] = set()
    for number, row in enumerate(envelope.r):
        result, retryable = _decode_row(number, row)
        result.device = device
        if result.candidate_id in envelope.p:
            result.per_prompt = _decode_prompts(result.candidate_id, envelope.p[result.candidate_id])
        if result.candidate_id in seen:
            raise ReportError(f"row {number}: candidate {result.candidate_id} is reported twice")
        if members is not None and result.candidate_id not in members:
            raise ReportError(f"row {number}: candidate {result.candidate_id} is not one of this shard's")
        seen.add(result.candidate_id)
        report.results.append(result)
        if retryable is not None:
            report.retryable[result.candidate_id] = retryable
    return report


def _decode_row(number: int, row: list[Any]) -> tuple[EvaluationResult, bool | None]:
    if len(row) < 2 or row[1] not in (0, 1) or isinstance(row[1], bool):
        raise ReportError(f"row {number}: expected [candidate id, 1, metrics...] or [candidate id, 0, ...]")
    if row[1] == 0:
        try:
            candidate_id, _, reason, retryable = _FAILED_ROW.validate_python(tuple(row), strict=True)
        except ValidationError as error:
            raise ReportError(f"row {number}: {_why(error)}") from None
        return EvaluationResult.failed(candidate_id, reason), bool(retryable)
    candidate_id = row[0]
    if not isinstance(candidate_id, str) or re.fullmatch(CANDIDATE_ID, candidate_id) is None:
        raise ReportError(f"row {number}: {str(candidate_id)[:40]!r} is not a candidate id")
    values = dict(zip(METRIC_FIELDS, row[2:], strict=False))
    try:
        metrics = Metrics.model_validate(values)
    except ValidationError as error:
        raise ReportError(f"row {number}: {_why(error)}") from None
    return EvaluationResult.succeeded(candidate_id, metrics), None


def _decode_prompts(candidate_id: str, rows: list[list[Any]]) -> list[PromptStats]:
    try:
        return [PromptStats.model_validate(dict(zip(PROMPT_FIELDS, row, strict=False))) for row in rows]
    except ValidationError as error:
        raise ReportError(f"per-prompt rows of {candidate_id}: {_why(error)}") from None


def _why(error: ValidationError) -> str:
    details = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in details["loc"])
    return f"{location}: {details['msg']}" if location else details["msg"]
