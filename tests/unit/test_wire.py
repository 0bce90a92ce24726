"""The termination-message report: round trip, the 4 KiB budget, and clear failures."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sustaindiffusion.api.results import Device, EvaluationResult, Metrics
from sustaindiffusion.api.wire import (
    METRIC_FIELDS,
    TERMINATION_MESSAGE_LIMIT,
    ReportError,
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
    human_images=19,
    female_images=9,
    male_images=10,
    white_images=5,
    asian_images=5,
    black_images=4,
    arab_images=5,
    quality_stddev=0.0123456789,
)


def _report(successes: int, failures: int = 0, reason: str = "CUDA out of memory") -> ShardReport:
    device = Device(name="NVIDIA H100 80GB HBM3", driver="580.65", gpu_energy="nvml", cpu_energy="rapl")
    report = ShardReport(generation=7, shard=3, device=device)
    for i in range(successes):
        report.results.append(EvaluationResult.succeeded(f"{i:016x}", METRICS))
    for i in range(failures):
        candidate_id = f"{1000 + i:016x}"
        report.results.append(EvaluationResult.failed(candidate_id, reason))
        report.retryable[candidate_id] = i % 2 == 0
    return report


def test_round_trip_keeps_every_field_to_six_digits() -> None:
    decoded = decode_report(encode_report(_report(2, 2)))
    assert (decoded.generation, decoded.shard, decoded.device.name) == (7, 3, "NVIDIA H100 80GB HBM3")
    assert (decoded.device.gpu_energy, decoded.device.cpu_energy, decoded.device.driver) == (
        "nvml",
        "rapl",
        "580.65",
    )
    assert all(r.device == decoded.device for r in decoded.results)
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
    with pytest.raises(ReportError, match="not a version-1 worker report"):
        decode_report("Error: something printed to the log")
    with pytest.raises(ReportError, match="version-1"):
        decode_report('{"v": 99}')


GOOD_ROW = ["0123456789abcdef", 1, 0.5, 0.25, 0.6, 10.0, 1.0, 5.0, 5.0, 0, 4]


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("", "empty"),
        ('{"v":1}', "g: Field required"),
        ('{"v":1,"g":0,"s":0,"r":[5]}', "r.0: Input should be a valid array"),
        ('{"v":1,"g":1e400,"s":0}', "g: Input should be a valid integer"),
        ('{"v":1,"g":0,"s":0,"r":[["0123456789abcdef",1,1e400,0,0,0,0,0,0,0,1]]}', "gender_bias"),
        ('{"v":1,"g":0,"s":0,"r":[["0123456789abcdef",1,NaN,0,0,0,0,0,0,0,1]]}', "finite number"),
        (
            '{"v":1,"g":0,"s":0,"r":[["0123456789abcdef",1,0.5,0.5,0.5,-1,0,0,0,0,1]]}',
            "greater than or equal",
        ),
        ('{"v":1,"g":0,"s":0,"r":[["0123456789abcdef",1,1.5,0,0,0,0,0,0,0,1]]}', "less than or equal to 1"),
        ('{"v":1,"g":0,"s":0,"r":[["0123456789abcdef"]]}', "row 0: expected"),
        ('{"v":1,"g":0,"s":0,"r":[["0123456789abcdef",true,0.5]]}', "row 0: expected"),
        ('{"v":1,"g":0,"s":0,"r":[["../../etc/passwd",1,0.5,0,0,0,0,0,0,0,1]]}', "is not a candidate id"),
        ('{"v":1,"g":0,"s":0,"r":[["0123456789abcdef",0,"oom"]]}', "row 0"),
        ('{"v":1,"g":0,"s":0,"r":[["0123456789abcdef",1,0.5]]}', "row 0"),
        ("[" * 5000 + "]" * 5000, "not a version-1"),
        ('{"v":1,"g":0,"s":0,"x":' + '"' + "a" * 70_000 + '"}', "more than any report"),
        (f'{{"v":1,"g":0,"s":0,"r":[{GOOD_ROW},{GOOD_ROW}]}}'.replace("'", '"'), "reported twice"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(message: str, why: str) -> None:
    with pytest.raises(ReportError, match=why):
        decode_report(message)


def test_a_report_must_be_the_shards_own() -> None:
    text = encode_report(_report(2))
    members = {f"{0:016x}", f"{1:016x}"}
    assert len(decode_report(text, generation=7, shard=3, members=members).results) == 2
    with pytest.raises(ReportError, match="generation 7, not 8"):
        decode_report(text, generation=8)
    with pytest.raises(ReportError, match="shard 3, not 4"):
        decode_report(text, shard=4)
    with pytest.raises(ReportError, match=f"candidate {1:016x} is not one of this shard's"):
        decode_report(text, members={f"{0:016x}"})


def test_rows_of_older_and_newer_workers_decode() -> None:
    """Rows list Metrics' fields in order: shorter rows take defaults, longer ones keep what is known."""
    older = '{"v":1,"g":0,"s":0,"r":[["0123456789abcdef",1,0.5,0.25,0.6,10.0,1.0]]}'
    metrics = decode_report(older).results[0].metrics
    assert metrics is not None
    assert (metrics.gpu_joules, metrics.images, metrics.energy_estimated, metrics.human_images) == (
        0.0,
        0,
        False,
        None,
    )
    assert not metrics.counted
    values = [
        1 if name == "energy_estimated" else 0.5 if name.endswith(("bias", "quality")) else 3
        for name in METRIC_FIELDS
    ]
    newer = json.dumps(
        {"v": 1, "g": 0, "s": 0, "r": [["0123456789abcdef", 1, *values, 7, "a field to come"]]}
    )
    decoded = decode_report(newer).results[0].metrics
    assert decoded == Metrics.model_validate(dict(zip(METRIC_FIELDS, values, strict=True)))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=12) | st.dictionaries(st.text(max_size=8), children, max_size=8)
    ),
    max_leaves=60,
)
REPORTISH = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 2, "1", True])},
    optional={
        "g": JSON | st.integers(min_value=0, max_value=5),
        "s": JSON | st.integers(min_value=0, max_value=5),
        "d": JSON,
        "e": JSON,
        "r": st.lists(
            st.lists(JSON, max_size=14)
            | st.tuples(st.sampled_from(["0123456789abcdef", "x"]), st.sampled_from([0, 1]), JSON, JSON).map(
                list
            ),
            max_size=6,
        ),
        "x": JSON,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON, REPORTISH).map(lambda value: json.dumps(value, allow_nan=True)[:4096]))
def test_any_json_decodes_or_raises_report_error_only(text: str) -> None:
    try:
        report = decode_report(text, shard=0, members={"0123456789abcdef"})
    except ReportError:
        return
    for result in report.results:
        assert result.candidate_id == "0123456789abcdef"
        if result.metrics is not None:
            dumped = result.metrics.model_dump()
            assert all(math.isfinite(v) and v >= 0 for v in dumped.values() if isinstance(v, float))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=4096))
def test_any_bytes_decode_or_raise_report_error_only(data: bytes) -> None:
    with contextlib.suppress(ReportError):
        decode_report(data)
    with contextlib.suppress(ReportError):
        decode_report(data.decode("latin-1"))
