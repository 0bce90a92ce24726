"""The termination-message report: round trip, the 4 KiB budget, and clear failures."""

from __future__ import annotations

import pytest

from sustaindiffusion.api.results import EvaluationResult, Metrics
from sustaindiffusion.api.wire import (
    TERMINATION_MESSAGE_LIMIT,
    ReportTooLargeError,
    ShardReport,
    decode_report,
    encode_report,
)

METRICS = Metrics(
    gender_bias=0.123456789,
    ethnic_bias=0.5,
    quality=0.31234567,
    energy_joules_per_image=1234.56789,
    seconds_per_image=3.14159265,
    gpu_joules=98765.4321,
    cpu_joules=1234.5678,
    energy_estimated=True,
    images=20,
)


def _report(successes: int, failures: int = 0, reason: str = "CUDA out of memory") -> ShardReport:
    report = ShardReport(
        generation=7, shard=3, device="NVIDIA H100 80GB HBM3", energy_methods=("nvml", "rapl")
    )
    for i in range(successes):
        report.results.append(EvaluationResult.succeeded(f"{i:016x}", METRICS))
    for i in range(failures):
        candidate_id = f"{1000 + i:016x}"
        report.results.append(EvaluationResult.failed(candidate_id, reason))
        report.retryable[candidate_id] = i % 2 == 0
    return report


def test_round_trip_keeps_every_field_to_six_digits() -> None:
    decoded = decode_report(encode_report(_report(2, 2)))
    assert (decoded.generation, decoded.shard, decoded.device) == (7, 3, "NVIDIA H100 80GB HBM3")
    assert decoded.energy_methods == ("nvml", "rapl")
    ok = decoded.results[0]
    assert ok.metrics is not None
    assert ok.metrics.gender_bias == pytest.approx(METRICS.gender_bias, rel=1e-5)
    assert ok.metrics.energy_joules_per_image == pytest.approx(METRICS.energy_joules_per_image, rel=1e-5)
    assert ok.metrics.energy_estimated
    assert ok.metrics.images == 20
    failed = decoded.results[2]
    assert failed.reason == "CUDA out of memory"
    assert decoded.retryable == {f"{1000:016x}": True, f"{1001:016x}": False}


def test_the_largest_allowed_shard_fits_in_a_termination_message() -> None:
    text = encode_report(_report(16))  # spec.execution.candidatesPerPod allows at most 16
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT


def test_long_failure_reasons_are_shortened_to_fit() -> None:
    text = encode_report(_report(0, 16, reason="x" * 2000))
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert all(len(r.reason or "") <= 160 for r in decode_report(text).results)


def test_a_shard_too_large_is_refused_with_advice() -> None:
    with pytest.raises(ReportTooLargeError, match=r"need \d+ bytes, over the 4096-byte .*candidatesPerPod"):
        encode_report(_report(60))


def test_garbage_is_not_a_report() -> None:
    with pytest.raises(ValueError, match="not a worker report"):
        decode_report("Error: something printed to the log")
    with pytest.raises(ValueError, match="version-1"):
        decode_report('{"v": 99}')
