"""The archive's record format: named keys and versions, exact floats, and archives of every format
still replay: the earlier positional format (a fixture written by that code), format 2 (legacy
candidate ids, held-out validation) and format 3 (canonical ids, every part of a search: screening,
its rest, more evidence, validation), each archive with the candidate identity it began with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sustaindiffusion.api.results import EvaluationResult, Metrics
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.search.engine import ReplayMismatchError, SearchEngine
from sustaindiffusion.search.records import (
    FORMAT,
    ArchiveRecord,
    RecordError,
    current_engine_version,
    parse_lines,
    uses_canonical_ids,
)
from tests.support.engine_runs import make_spec, recorded_run, run
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
    replayed = SearchEngine.from_archive(spec, records)
    assert not replayed.canonical_ids  # the identity the archive began with
    assert replayed.outcome().finished
    assert sorted(p.candidate.candidate_id for p in replayed.front()) == meta["front"]
    # The same search run now, with the archive's candidate identity, asks the candidates it holds.
    fresh = SearchEngine(spec, canonical_ids=False)
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


def test_an_archive_keeps_the_candidate_identity_of_its_first_record() -> None:
    """Archives begun before canonical ids (format 2) replay with the ids they hold, also after
    records of format 3 were appended to them; new archives use canonical ids."""
    result = EvaluationResult.failed("a" * 16, "x")
    old, new = (
        ArchiveRecord(format=2, generation=0, result=result),
        ArchiveRecord(generation=0, result=result),
    )
    assert new.format == 3
    assert ArchiveRecord.from_line(old.to_line()).format == 2
    assert uses_canonical_ids([])
    assert uses_canonical_ids([new, old])
    assert not uses_canonical_ids([old, new])


def test_a_format_two_archive_replays_with_its_own_candidate_ids() -> None:
    """A search whose guidance can switch classifier-free guidance off: canonical and legacy ids
    differ, and each archive replays to the end under the identity it was recorded with."""
    spec = make_spec(searchSpace={"guidanceScale": {"min": 0.0, "max": 2.0, "step": 0.5}})
    legacy = SearchEngine(spec, canonical_ids=False)
    run(legacy)
    lines = [ArchiveRecord(format=2, generation=0, result=r).to_line() for r in legacy.told]
    replayed = SearchEngine.from_archive(spec, parse_lines("\n".join(lines)))
    assert replayed.outcome().finished
    assert [r.candidate_id for r in replayed.told] == [r.candidate_id for r in legacy.told]
    canonical = SearchEngine(spec)
    run(canonical)
    assert {r.candidate_id for r in canonical.told} != {r.candidate_id for r in legacy.told}
    with pytest.raises(ReplayMismatchError):
        SearchEngine.replay(spec, legacy.told)  # told to an engine of the other identity


def _fixture(name: str) -> tuple[dict[str, object], SustainSearchSpec, list[ArchiveRecord]]:
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    records = parse_lines((FIXTURES / f"{name}.jsonl").read_text())
    return meta, SustainSearchSpec.model_validate(meta["spec"]), records


@pytest.mark.parametrize(("name", "record_format"), [("archive-format-2", 2), ("archive-format-3", 3)])
def test_archives_of_formats_two_and_three_replay_to_the_end_they_recorded(
    name: str, record_format: int
) -> None:
    meta, spec, records = _fixture(name)
    assert len(records) == meta["records"]
    assert {r.format for r in records} == {record_format}
    replayed = SearchEngine.from_archive(spec, records)
    assert replayed.canonical_ids is (record_format == 3)
    assert replayed.outcome().reason.value == meta["outcome"]
    assert sorted(p.candidate.candidate_id for p in replayed.front()) == meta["front"]
    assert [c.candidate_id for c, result in replayed.validation() if result is not None] == meta["validated"]
    assert replayed.hypervolume_history == meta["hypervolume"]


@pytest.mark.parametrize("name", ["archive-format-2", "archive-format-3"])
def test_a_search_run_now_writes_the_archive_it_wrote_then(name: str) -> None:
    """The same spec and evaluations give the same records, value for value and in order: what each
    part of the search asks (candidates, images, seeds) and what it makes of the results."""
    _, spec, records = _fixture(name)
    fresh = recorded_run(spec, canonical_ids=records[0].format >= 3)

    def lines(archive: list[ArchiveRecord]) -> list[str]:
        return [record.model_copy(update={"engine": None}).to_line() for record in archive]

    assert lines(fresh) == lines(records)
