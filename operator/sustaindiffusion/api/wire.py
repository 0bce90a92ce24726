"""The compact report a worker pod leaves in its termination message, and how it is read back.

Kubernetes keeps at most 4096 bytes of a container's termination message, so results travel as
short JSON arrays; `encode_report` measures the size and refuses to exceed the budget (the
caller then says so plainly instead of losing results silently).

    {"v": 1, "g": generation, "s": shard, "d": device, "e": [gpu method, cpu method],
     "r": [[id, 1, gb, eb, q, J/img, s/img, gpu J, cpu J, estimated, images],
           [id, 0, reason, retryable], ...],
     "x": fatal error or null}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sustaindiffusion.api.results import EvaluationResult, EvaluationStatus, Metrics

WIRE_VERSION = 1
TERMINATION_MESSAGE_LIMIT = 4096
REASON_LIMIT = 160


class ReportTooLargeError(ValueError):
    """The results of a shard do not fit in a termination message."""


@dataclass
class ShardReport:
    generation: int
    shard: int
    results: list[EvaluationResult] = field(default_factory=list)
    retryable: dict[str, bool] = field(default_factory=dict)  # candidate id -> whether a retry may help
    device: str = ""
    energy_methods: tuple[str, str] = ("", "")
    fatal: str | None = None


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _encode_result(result: EvaluationResult, retryable: bool, reason_limit: int) -> list[object]:
    metrics = result.metrics
    if result.status is EvaluationStatus.SUCCEEDED and metrics is not None:
        return [
            result.candidate_id,
            1,
            _round(metrics.gender_bias),
            _round(metrics.ethnic_bias),
            _round(metrics.quality),
            _round(metrics.energy_joules_per_image),
            _round(metrics.seconds_per_image),
            _round(metrics.gpu_joules),
            _round(metrics.cpu_joules),
            int(metrics.energy_estimated),
            metrics.images,
        ]
    return [result.candidate_id, 0, (result.reason or "unknown failure")[:reason_limit], int(retryable)]


def encode_report(report: ShardReport, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """Compact JSON of the report, within `limit` bytes; long failure reasons are shortened first."""
    for reason_limit in (REASON_LIMIT, 60, 20):
        payload = {
            "v": WIRE_VERSION,
            "g": report.generation,
            "s": report.shard,
            "d": report.device[:64],
            "e": list(report.energy_methods),
            "r": [
                _encode_result(r, report.retryable.get(r.candidate_id, False), reason_limit)
                for r in report.results
            ],
            "x": report.fatal[: reason_limit * 4] if report.fatal else None,
        }
        text = json.dumps(payload, separators=(",", ":"))
        size = len(text.encode())
        if size <= limit:
            return text
    raise ReportTooLargeError(
        f"the results of {len(report.results)} candidates need {size} bytes, over the {limit}-byte "
        "termination-message limit: lower spec.execution.candidatesPerPod"
    )


def decode_report(text: str) -> ShardReport:
    """Read a worker's termination message; raises ValueError with a reason when it is not one."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"termination message is not a worker report: {error.msg}") from None
    if not isinstance(payload, dict) or payload.get("v") != WIRE_VERSION:
        raise ValueError(f"termination message is not a version-{WIRE_VERSION} worker report")
    methods = [*payload.get("e", []), "", ""]
    report = ShardReport(
        generation=int(payload["g"]),
        shard=int(payload["s"]),
        device=str(payload.get("d", "")),
        energy_methods=(str(methods[0]), str(methods[1])),
        fatal=payload.get("x"),
    )
    for row in payload.get("r", []):
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
            report.results.append(EvaluationResult.succeeded(candidate_id, metrics))
        else:
            report.results.append(EvaluationResult.failed(candidate_id, str(row[2])))
            report.retryable[candidate_id] = bool(row[3])
    return report
