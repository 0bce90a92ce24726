"""The generation loop with an in-memory archive and executor: what it launches, ingests, releases
and reports, and that a loop rebuilt from the archive at any point continues without repeating work."""

from __future__ import annotations

from typing import Any

import pytest

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import EvaluationTask, Part, TaskCandidate
from sustaindiffusion.api.wire import ShardReport, encode_report
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.loop import (
    Collected,
    GenerationLoop,
    PromptsUnavailableError,
    Settlement,
    ShardOutcome,
    Step,
    report_outcome,
    settle,
)
from sustaindiffusion.search.outcome import OutcomeReason
from sustaindiffusion.search.records import ArchiveRecord
from tests.support.engine_runs import make_spec, run
from tests.support.fake_evaluator import fake_task_result
from tests.support.fake_executor import FakeExecutor, MemoryArchive, ShardFault


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
    assert executor.launches == [(0, 0), (1, 0), (2, 0), (3, 0)]
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
    assert sorted(executor.launches) == [(0, 0), (1, 0), (2, 0), (3, 0)]


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
    executor = FakeExecutor(faults=given_up_at(1, 1, "shard 1: OOMKilled"))
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
    executor = FakeExecutor(faults=given_up_at(1, 0, "boom"))
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
    launched = executor.tasks[(0, 0)]
    executor.held.clear()
    changed = loop_of(make_spec(execution={"candidatesPerPod": 4}), archive, executor)
    changed.step({})
    assert executor.tasks[(0, 0)] is launched
    assert launched.candidates_per_shard == 1


def given_up_at(generation: int, shard: int, reason: str) -> ShardFault:
    def fault(task: EvaluationTask, index: int) -> ShardOutcome | None:
        if (task.generation, index) == (generation, shard):
            return ShardOutcome(failure=reason, attempts=2, final=True)
        return None

    return fault


def task_of(ids: list[str], per_shard: int, round: int = 0, retries: int = 1) -> EvaluationTask:
    return EvaluationTask.of(
        "s",
        make_spec(),
        generation=2,
        prompts=["p"],
        candidates=[TaskCandidate(candidate_id=i, settings={"inferenceSteps": 10}) for i in ids],
        candidates_per_shard=per_shard,
        save_images=False,
        round=round,
        retries=retries,
    )


IDS = [f"{i:016x}" for i in range(4)]


def test_settle_takes_only_a_shards_own_results_and_fails_given_up_shards() -> None:
    task = task_of(IDS, per_shard=2)
    ok = EvaluationResult.failed  # any result object will do for the bookkeeping
    collected = Collected(
        shards={
            0: ShardOutcome(results=[ok(IDS[0], "fine"), ok(IDS[2], "forged: belongs to shard 1")]),
            1: ShardOutcome(
                results=[ok(IDS[3], "fine")], failure="shard 1: exited with code 137 (OOMKilled)", final=True
            ),
        }
    )
    pending = {IDS[0], IDS[2], IDS[3]}  # candidate 1 was ingested earlier
    settlement = settle([(task, collected)], pending)
    assert [(r.candidate_id, r.result.reason) for r in settlement.records] == [
        (IDS[0], "fine"),
        (IDS[2], "shard 1: exited with code 137 (OOMKilled)"),
        (IDS[3], "fine"),
    ]
    assert settlement.retry == {}
    assert all(isinstance(r, ArchiveRecord) and r.generation == 2 for r in settlement.records)


def test_an_unusable_report_is_retried_once_the_round_has_settled() -> None:
    task = task_of(IDS, per_shard=2, retries=1)
    unusable = ShardOutcome(failure="shard 0: unusable worker report (empty)")
    running = Collected(shards={0: unusable})
    assert settle([(task, running)], set(IDS)) == Settlement()  # shard 1 still runs: wait
    done = Collected(
        shards={0: unusable, 1: ShardOutcome(results=[EvaluationResult.failed(i, "x") for i in IDS[2:]])}
    )
    settlement = settle([(task, done)], set(IDS))
    assert [r.candidate_id for r in settlement.records] == IDS[2:]
    assert settlement.retry == {IDS[0]: 1, IDS[1]: 1}
    # The follow-up round settles the same way again: their two attempts are spent.
    follow_up = task_of(IDS[:2], per_shard=2, round=1, retries=0)
    again = Collected(shards={0: ShardOutcome(failure="shard 0: the worker's report has no result")})
    final = settle([(task, done), (follow_up, again)], set(IDS[:2]))
    assert [(r.candidate_id, r.result.reason) for r in final.records] == [
        (IDS[0], "shard 0: the worker's report has no result"),
        (IDS[1], "shard 0: the worker's report has no result"),
    ]
    assert final.retry == {}


def test_a_lost_report_is_evaluated_again_by_the_loop_and_nothing_is_lost() -> None:
    spec = make_spec(execution={"candidatesPerPod": 3, "retriesPerCandidate": 1})

    def lose_first_report(task: EvaluationTask, shard: int) -> ShardOutcome | None:
        if (task.generation, task.round, shard) == (1, 0, 0):
            return ShardOutcome(failure="shard 0: its pod was removed before its report was read")
        return None

    archive, executor = MemoryArchive(), FakeExecutor(faults=lose_first_report)
    step, status = drive(loop_of(spec, archive, executor))
    assert status["phase"] == "Succeeded"
    assert (1, 1) in executor.launches  # the follow-up round of generation 1
    follow_up = executor.tasks[(1, 1)]
    assert [c.candidate_id for c in follow_up.candidates] == [
        c.candidate_id for c in executor.tasks[(1, 0)].shard(0)
    ]
    assert follow_up.retries == 0
    assert all(r.result.ok for r in archive.records)
    reference = SearchEngine(spec)
    run(reference)
    assert sorted(r.candidate_id for r in archive.records) == sorted(r.candidate_id for r in reference.told)
    assert step.finished


def test_a_report_lost_every_time_fails_its_candidates_with_the_reason() -> None:
    spec = make_spec(execution={"candidatesPerPod": 3, "retriesPerCandidate": 2, "maxFailedCandidates": 100})

    def always_lost(task: EvaluationTask, shard: int) -> ShardOutcome | None:
        if task.generation == 1 and shard == 0:
            return ShardOutcome(failure="shard 0: unusable worker report (the termination message is empty)")
        return None

    archive, executor = MemoryArchive(), FakeExecutor(faults=always_lost)
    _, status = drive(loop_of(spec, archive, executor))
    assert [key for key in executor.launches if key[0] == 1] == [(1, 0), (1, 1), (1, 2)]  # 3 attempts
    failed = [r for r in archive.records if not r.result.ok]
    assert len(failed) == 3
    assert {r.result.reason for r in failed} == {
        "shard 0: unusable worker report (the termination message is empty)"
    }
    assert status["phase"] == "Succeeded"


def test_a_running_job_that_a_replay_does_not_ask_for_fails_the_search_with_advice() -> None:
    archive, executor = MemoryArchive(), FakeExecutor(held={0})
    loop_of(make_spec(), archive, executor).step({})  # the baseline's task exists
    other_seed = make_spec(baselines=[{"name": "fast", "inferenceSteps": 12}])  # asks other candidates
    step = loop_of(other_seed, archive, executor).step({})
    assert step.status.phase.value == "Failed"
    failed = {c.type: c for c in step.status.conditions or []}["Failed"]
    assert failed.reason == "ReplayMismatch"
    assert "delete and recreate the SustainSearch" in failed.message
    assert [e.reason for e in step.events] == ["ReplayMismatch"]


def test_an_archive_of_another_search_fails_the_search_with_advice() -> None:
    archive = MemoryArchive()
    drive(loop_of(make_spec(), archive, FakeExecutor()))
    step = loop_of(make_spec(algorithm={"seed": 99}), archive, FakeExecutor()).step({})
    assert step.status.phase.value == "Failed"
    assert {c.type: c.reason for c in step.status.conditions or []}["Failed"] == "ReplayMismatch"


def test_a_screened_search_runs_each_part_as_its_own_rounds_and_a_rebuilt_loop_repeats_nothing() -> None:
    """Screening and more evidence: a generation's parts are rounds of their own (numbered on), each
    task says which images it generates, and a loop rebuilt after every step (an operator restart)
    archives every part once and ends where a loop that was never restarted ends."""
    spec = make_spec(
        prompts={"inline": ["a portrait"], "imagesPerPrompt": 4},
        algorithm={
            "generations": 4,
            "screening": {"imagesPerPrompt": 1},
            "evidence": {"imagesPerPrompt": 2, "maxImagesPerPrompt": 8, "points": 2},
        },
    )
    archive, executor = MemoryArchive(), FakeExecutor()
    status: dict[str, Any] = {}
    for _ in range(400):
        step = loop_of(spec, archive, executor).step(status)
        status = step.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if step.finished:
            break
    assert status["phase"] == "Succeeded"
    keys = [r.key for r in archive.records]
    assert len(keys) == len(set(keys))
    by_part: dict[str, list[EvaluationTask]] = {}
    for (generation, _), task in sorted(executor.tasks.items()):
        assert generation == 0 or task.part is not Part.WHOLE
        by_part.setdefault(task.part.value, []).append(task)
    assert all((t.first_image, t.images_per_prompt) == (0, 1) for t in by_part["screen"])
    assert all((t.first_image, t.images_per_prompt) == (1, 3) for t in by_part["rest"])
    assert all(t.images_per_prompt == 2 for t in by_part["evidence"])
    assert all(
        c.first_image is not None and c.first_image >= 4 for t in by_part["evidence"] for c in t.candidates
    )
    for generation in range(1, 5):
        rounds = [task for (g, _), task in sorted(executor.tasks.items()) if g == generation]
        assert [t.round for t in rounds] == list(range(len(rounds)))  # one numbering per generation
    undisturbed_archive, undisturbed = MemoryArchive(), FakeExecutor()
    _, reference = drive(loop_of(spec, undisturbed_archive, undisturbed))
    assert [r.key for r in undisturbed_archive.records] == keys
    assert reference["screening"] == status["screening"]
    assert reference["front"] == status["front"]


def test_a_result_on_other_images_than_its_task_asked_for_is_a_failure() -> None:
    task = task_of(IDS[:2], per_shard=2, retries=0)
    good = fake_task_result(Candidate(IDS[0], 1, CandidateSettings()), task)
    wrong = fake_task_result(Candidate(IDS[1], 1, CandidateSettings()), task)
    assert wrong.metrics is not None
    wrong.metrics = wrong.metrics.model_copy(update={"images": wrong.metrics.images + 3})
    message = encode_report(ShardReport(generation=task.generation, shard=0, results=[good, wrong]))
    outcome = report_outcome(task, 0, message, attempts=1)
    assert [r.ok for r in outcome.results] == [True, False]
    assert outcome.results[1].reason == (
        f"shard 0: the worker reported {wrong.metrics.images} images where the task asked for "
        f"{len(task.prompts) * task.images_per_prompt}"
    )


class OrderedExecutor(FakeExecutor):
    """Records launches and releases in one list, in order; launches of `refused` fail."""

    def __init__(self, refused: set[int] | None = None, held: set[int] | None = None) -> None:
        super().__init__(held=held or set())
        self.calls: list[str] = []
        self.refused = refused or set()

    def launch(self, task: EvaluationTask) -> None:
        if task.generation in self.refused:
            raise ConnectionError("the API server is unreachable")
        self.calls.append(f"launch {task.generation}")
        super().launch(task)

    def release(self, generation: int) -> None:
        self.calls.append(f"release {generation}")
        super().release(generation)


def test_a_generation_that_completes_launches_the_next_in_the_same_step_before_releasing() -> None:
    spec = make_spec()
    executor = OrderedExecutor(held={1})
    loop = loop_of(spec, MemoryArchive(), executor)
    step = loop.step({})  # the fake's shards settle at once: generation 0 completes in this step
    assert executor.calls == ["launch 0", "launch 1", "release 0"]
    assert step.progressed
    assert not step.again  # generation 1's workers run; their events wake the search
    assert [e.reason for e in step.events] == ["GenerationStarted", "GenerationFinished", "GenerationStarted"]
    population = spec.algorithm.population_size
    assert step.events[-1].message.startswith(f"generation 1: {population} candidates")
    assert step.observation.running == population
    assert step.status.message == f"generation 1: {population} candidates being evaluated"
    second = loop.step(step.status.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert executor.launches == [(0, 0), (1, 0)]  # nothing launched twice
    assert not second.progressed
    assert not second.again


def test_a_next_generation_that_cannot_be_launched_is_left_to_the_next_step() -> None:
    spec = make_spec()
    executor = OrderedExecutor(refused={1})
    archive = MemoryArchive()
    loop = loop_of(spec, archive, executor)
    step = loop.step({})
    # The results are archived and reported; the launch is tried again at once, by the next step.
    assert {r.generation for r in archive.records} == {0}
    assert [e.reason for e in step.events] == ["GenerationStarted", "GenerationFinished"]
    assert step.again
    with pytest.raises(ConnectionError):  # the runtime reports the failure of this one
        loop.step(step.status.model_dump(mode="json", by_alias=True, exclude_none=True))
    executor.refused.clear()
    _, status = drive(loop)
    assert status["phase"] == "Succeeded"
    assert executor.launches == [(0, 0), (1, 0), (2, 0), (3, 0)]
