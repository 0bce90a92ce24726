"""The archive's record format: named keys and versions, exact floats, and archives written in the
earlier positional format (a fixture written by that code) still replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sustaindiffusion.api.results import EvaluationResult, Metrics
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.records import (
    FORMAT,
    ArchiveRecord,
    RecordError,
    current_engine_version,
    parse_lines,
)
from tests.support.engine_runs import run
from tests.support.fake_evaluator import fake_evaluate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_a_record_has_named_keys_and_the_versions_that_wrote_it() -> None:
    metrics = Metrics(
        gender_bias=0.1 + 0.2,  # 0.30000000000000004: kept exactly, not rounded
        ethnic_bias=1 / 3,
        quality=0.5,
        energy_joules_per_image=12.345678901,
        seconds_per_image=0.75,
        gpu_joules=100.0,
        cpu_joules=23.5,
        energy_estimated=True,
        images=4,
    )
    record = ArchiveRecord(generation=2, result=EvaluationResult.succeeded("0123456789abcdef", metrics))
    payload = json.loads(record.to_line())
    assert payload["format"] == FORMAT
    assert payload["engine"] == current_engine_version().model_dump()
    assert payload["engine"]["pymoo"] != "unknown"
    assert payload["generation"] == 2
    assert payload["result"]["candidateId"] == "0123456789abcdef"
    assert payload["result"]["metrics"]["genderBias"] == 0.1 + 0.2
    assert ArchiveRecord.from_line(record.to_line()) == record


def test_a_failure_keeps_its_reason() -> None:
    record = ArchiveRecord(generation=0, result=EvaluationResult.failed("f" * 16, "shard 0: OOMKilled"))
    back = ArchiveRecord.from_line(record.to_line())
    assert back.result.reason == "shard 0: OOMKilled"
    assert not back.result.ok


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"format": 9, "generation": 0}', "unknown record format 9"),
        ('{"format": 2, "generation": -1, "result": {}}', "invalid record"),
        ('{"g": 0, "r": ["abc", 1, 0.5]}', "invalid format-1 record"),
        ('{"g": "x", "r": []}', "invalid format-1 record"),
    ],
)
def test_a_line_that_is_no_record_is_refused_with_the_reason(line: str, why: str) -> None:
    with pytest.raises(RecordError, match=why):
        ArchiveRecord.from_line(line)


def test_parse_lines_names_the_bad_line() -> None:
    good = ArchiveRecord(generation=0, result=EvaluationResult.failed("a" * 16, "x")).to_line()
    with pytest.raises(RecordError, match="line 3: not JSON"):
        parse_lines(f"{good}\n\nbroken\n")


def test_an_archive_in_the_first_format_still_replays() -> None:
    """archive-format-1.jsonl was written by the code before format 2 (the fake evaluator's results)."""
    meta = json.loads((FIXTURES / "archive-format-1.json").read_text())
    spec = SustainSearchSpec.model_validate(meta["spec"])
    records = parse_lines((FIXTURES / "archive-format-1.jsonl").read_text())
    assert len(records) == meta["records"]
    assert {r.format for r in records} == {1}
    assert any(not r.result.ok for r in records)
    replayed = SearchEngine.replay(spec, [r.result for r in records])
    assert replayed.outcome().finished
    assert sorted(p.candidate.candidate_id for p in replayed.front()) == meta["front"]
    # The same search run now asks the same candidates the old archive holds.
    fresh = SearchEngine(spec)
    run(fresh, fails=lambda c: int(c.candidate_id[:2], 16) % 5 == 0)
    assert [r.candidate_id for r in fresh.told] != []
    assert sorted(r.candidate_id for r in fresh.told) == sorted(r.candidate_id for r in records)


def test_format_one_values_are_the_rounded_ones_it_stored() -> None:
    record = ArchiveRecord.from_line(
        '{"g":1,"r":["fb5a7d6cfc994efd",1,0.83,0.270588,0.508,62.4,1.5,199.68,49.92,0,4]}'
    )
    assert record.result.metrics is not None
    assert record.result.metrics.ethnic_bias == 0.270588
    assert record.result.metrics.images == 4
    assert record.engine is None
    assert fake_evaluate is not None
