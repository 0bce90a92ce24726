"""The generation loop with an in-memory archive and executor: what it launches, ingests, releases
and reports, and that a loop rebuilt from the archive at any point continues without repeating work."""

from __future__ import annotations

from typing import Any

import pytest

from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate
from sustaindiffusion.search.engine import OutcomeReason, SearchEngine
from sustaindiffusion.search.loop import Collected, GenerationLoop, PromptsUnavailableError, Step, new_records
from sustaindiffusion.search.records import ArchiveRecord
from tests.support.engine_runs import make_spec, run
from tests.support.fake_executor import FakeExecutor, MemoryArchive


def loop_of(spec: SustainSearchSpec, archive: MemoryArchive, executor: FakeExecutor) -> GenerationLoop:
    return GenerationLoop("s", spec, archive, executor, prompts=lambda: ["a portrait"], save_images=False)


def drive(loop: GenerationLoop, limit: int = 200) -> tuple[Step, dict[str, Any]]:
    """Step until the search finishes, carrying the status between steps as a runtime stores it."""
    status: dict[str, Any] = {}
    for _ in range(limit):
        step = loop.step(status)
        status = step.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if step.finished:
            return step, status
    raise AssertionError("the loop did not finish")


def test_the_loop_runs_a_search_as_the_engine_alone_would() -> None:
    spec = make_spec()
    archive, executor = MemoryArchive(), FakeExecutor()
    step, status = drive(loop_of(spec, archive, executor))
    reference = SearchEngine(spec)
    run(reference)
    assert sorted(r.candidate_id for r in archive.records) == sorted(r.candidate_id for r in reference.told)
    assert status["phase"] == "Succeeded"
    assert status["generationProgress"] == "3/3"
    assert {e["candidateId"] for e in status["front"]} == {
        p.candidate.candidate_id for p in reference.front()
    }
    assert executor.launches == [0, 1, 2, 3]
    assert executor.released == [0, 1, 2, 3]  # each generation freed once, after it was archived
    assert step.observation.outcome.reason is OutcomeReason.GENERATIONS_COMPLETED
    assert all(r.engine is not None for r in archive.records)


def test_a_loop_rebuilt_from_the_archive_after_every_step_repeats_nothing() -> None:
    spec = make_spec()
    archive, executor = MemoryArchive(), FakeExecutor()
    status: dict[str, Any] = {}
    for _ in range(200):
        step = loop_of(spec, archive, executor).step(status)  # a fresh loop: an operator restart
        status = step.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if step.finished:
            break
    ids = [r.candidate_id for r in archive.records]
    assert len(ids) == len(set(ids))
    assert status["phase"] == "Succeeded"
    assert sorted(executor.launches) == [0, 1, 2, 3]


def test_an_archive_append_that_fails_tells_the_engine_nothing() -> None:
    spec = make_spec()
    archive, executor = MemoryArchive(), FakeExecutor()
    loop = loop_of(spec, archive, executor)
    archive.fail_next_append = True
    with pytest.raises(ConnectionError):
        loop.step({})
    assert loop.engine.told == []  # durable first, then the engine
    step, _ = drive(loop_of(spec, archive, executor))
    ids = [r.candidate_id for r in archive.records]
    assert len(ids) == len(set(ids))
    assert step.finished


def test_given_up_shards_become_failures_with_their_reason() -> None:
    spec = make_spec(execution={"candidatesPerPod": 3, "maxFailedCandidates": 100})
    executor = FakeExecutor(
        faults=lambda generation, shard: "shard 1: OOMKilled" if generation == 1 and shard == 1 else None
    )
    archive = MemoryArchive()
    _, status = drive(loop_of(spec, archive, executor))
    failed = [r for r in archive.records if not r.result.ok]
    assert len(failed) == 3
    assert {r.generation for r in failed} == {1}
    assert {r.result.reason for r in failed} == {"shard 1: OOMKilled"}
    assert status["evaluations"]["failed"] == 3
    assert status["phase"] == "Succeeded"


def test_too_many_failures_stop_the_search_and_release_the_generation_in_flight() -> None:
    spec = make_spec(execution={"candidatesPerPod": 2, "maxFailedCandidates": 1})
    executor = FakeExecutor(
        faults=lambda generation, shard: "boom" if generation == 1 and shard == 0 else None
    )
    archive = MemoryArchive()
    step, status = drive(loop_of(spec, archive, executor))
    assert status["phase"] == "Failed"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Failed"] == "TooManyFailures"
    assert 1 in executor.released
    assert [e.reason for e in step.events][-1] == "TooManyFailures"


def test_a_generation_whose_workers_report_nothing_waits() -> None:
    spec = make_spec()
    executor = FakeExecutor(held={0})
    loop = loop_of(spec, MemoryArchive(), executor)
    first = loop.step({})
    assert first.progressed  # it launched the baseline
    second = loop.step(first.status.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert not second.progressed
    assert second.status.phase.value == "Running"
    assert second.observation.running == 1


def test_missing_prompts_block_the_launch() -> None:
    def missing() -> list[str]:
        raise PromptsUnavailableError("the prompts ConfigMap ns/p does not exist")

    executor = FakeExecutor()
    loop = GenerationLoop("s", make_spec(), MemoryArchive(), executor, prompts=missing, save_images=False)
    step = loop.step({})
    assert executor.launches == []
    assert step.status.phase.value == "Running"
    assert step.status.message == "the prompts ConfigMap ns/p does not exist"
    assert [e.reason for e in step.events] == ["PromptsUnavailable"]


def test_the_launched_task_keeps_its_shard_map_when_the_spec_changes() -> None:
    """candidatesPerPod may change mid-generation; the failures map to the shards as launched."""
    archive, executor = MemoryArchive(), FakeExecutor(held={0})
    loop_of(make_spec(execution={"candidatesPerPod": 1}), archive, executor).step({})
    launched = executor.tasks[0]
    executor.held.clear()
    changed = loop_of(make_spec(execution={"candidatesPerPod": 4}), archive, executor)
    changed.step({})
    assert executor.tasks[0] is launched
    assert launched.candidates_per_shard == 1


def test_new_records_take_only_a_shards_own_pending_candidates() -> None:
    task = EvaluationTask.of(
        "s",
        make_spec(),
        generation=2,
        prompts=["p"],
        candidates=[
            TaskCandidate(candidate_id=f"{i:016x}", settings={"inferenceSteps": 10 + i}) for i in range(4)
        ],
        candidates_per_shard=2,
        save_images=False,
    )
    ok = EvaluationResult.failed  # any result object will do for the bookkeeping
    collected = Collected(
        results=[
            (0, ok(f"{0:016x}", "fine")),
            (0, ok(f"{2:016x}", "forged: belongs to shard 1")),
            (1, ok(f"{3:016x}", "fine")),
        ],
        failed_shards={1: "shard 1: worker exited with code 137 (OOMKilled)"},
    )
    pending = {f"{i:016x}" for i in (0, 2, 3)}  # candidate 1 was ingested earlier
    records = new_records(task, collected, pending)
    assert [(r.candidate_id, r.result.reason) for r in records] == [
        (f"{0:016x}", "fine"),
        (f"{3:016x}", "fine"),
        (f"{2:016x}", "shard 1: worker exited with code 137 (OOMKilled)"),
    ]
    assert all(isinstance(r, ArchiveRecord) and r.generation == 2 for r in records)
