"""Which phase, conditions and events follow from a step's observation: every path, on plain values."""

from __future__ import annotations

from typing import Any

from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.status import Phase
from sustaindiffusion.search.decisions import (
    Blocked,
    ConditionUpdate,
    Decision,
    Launch,
    Observation,
    decide,
    invalid_spec,
    needs_reconciling,
)
from sustaindiffusion.search.outcome import Outcome, OutcomeReason, OutcomeState
from sustaindiffusion.search.records import ArchiveRecord

RUNNING = Outcome(OutcomeState.RUNNING, OutcomeReason.RUNNING, "generation 2")


def conditions(decision: Decision) -> dict[str, ConditionUpdate]:
    return {c.type: c for c in decision.conditions}


def stored(decision: Decision, phase: str | None = None) -> dict[str, Any]:
    """The status a runtime would have stored after `decision`."""
    return {
        "phase": phase or decision.phase.value,
        "conditions": [
            {"type": c.type, "status": "True" if c.status else "False", "reason": c.reason}
            for c in decision.conditions
        ],
    }


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


def test_a_running_generation_progresses_and_says_so_once() -> None:
    observation = Observation(2, RUNNING, candidates=6, running=6, launched=Launch(6, 2))
    decision = decide(observation, {})
    assert decision.phase is Phase.RUNNING
    assert conditions(decision)["Progressing"] == ConditionUpdate(
        "Progressing", True, "GenerationRunning", "generation 2"
    )
    assert conditions(decision)["Queued"].status is False
    assert conditions(decision)["WorkersPending"].status is False
    assert decision.message == "generation 2: 6 candidates being evaluated"
    assert reasons(decision) == ["GenerationStarted"]
    assert decision.events[0].message == "generation 2: 6 candidates in 2 shards"
    # The next pass sees the same (nothing launched): nothing new to tell.
    again = decide(Observation(2, RUNNING, candidates=6, running=6), stored(decision))
    assert again.events == []


def test_a_suspended_job_is_queued_not_failed() -> None:
    observation = Observation(1, RUNNING, running=4, queued="its Job is suspended (queued or preempted)")
    decision = decide(observation, {})
    assert decision.phase is Phase.RUNNING
    queued = conditions(decision)["Queued"]
    assert (queued.status, queued.reason) == (True, "JobSuspended")
    assert "suspended" in queued.message
    assert reasons(decision) == ["Queued"]
    assert decision.events[0].type == "Normal"
    assert decide(observation, stored(decision)).events == []  # posted on the transition only
    admitted = decide(Observation(1, RUNNING, running=4), stored(decision))
    assert conditions(admitted)["Queued"] == ConditionUpdate("Queued", False, "Admitted")


def test_unschedulable_or_unpullable_workers_are_pending_with_the_reason() -> None:
    for why in (
        "pod s-g0001-0-abc is unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        "pod s-g0001-0-abc: ImagePullBackOff: Back-off pulling image",
    ):
        decision = decide(Observation(1, RUNNING, running=2, workers_pending=why), {})
        pending = conditions(decision)["WorkersPending"]
        assert (pending.status, pending.reason, pending.message) == (True, "PodPending", why)
        assert decision.phase is Phase.RUNNING
        assert [(e.type, e.reason, e.message) for e in decision.events] == [
            ("Warning", "WorkersPending", why)
        ]
        assert decide(Observation(1, RUNNING, running=2, workers_pending=why), stored(decision)).events == []


def test_missing_prompts_block_progress_without_failing() -> None:
    blocked = Blocked("PromptsUnavailable", "the prompts ConfigMap team/prompts does not exist")
    decision = decide(Observation(0, RUNNING, blocked=blocked), {"phase": "Running"})
    assert decision.phase is Phase.RUNNING
    assert decision.conditions == [
        ConditionUpdate("Progressing", False, "PromptsUnavailable", blocked.message)
    ]
    assert decision.message == blocked.message
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "PromptsUnavailable")]
    assert decide(Observation(0, RUNNING, blocked=blocked), stored(decision)).events == []


def test_an_invalid_spec_fails_the_search_with_the_error() -> None:
    decision = invalid_spec("algorithm.populationSize: Input should be greater than or equal to 4", {})
    assert decision.phase is Phase.FAILED
    assert decision.finished
    condition = conditions(decision)["Failed"]
    assert (condition.status, condition.reason) == (True, "InvalidSpec")
    assert "populationSize" in condition.message
    assert reasons(decision) == ["InvalidSpec"]
    assert invalid_spec("same", stored(decision)).events == []


def test_a_failed_baseline_fails_the_search() -> None:
    outcome = Outcome(OutcomeState.FAILED, OutcomeReason.BASELINE_FAILED, "the model's default settings ...")
    decision = decide(Observation(0, outcome), {"phase": "Running"})
    assert decision.phase is Phase.FAILED
    by_type = conditions(decision)
    assert by_type["Failed"] == ConditionUpdate("Failed", True, "BaselineFailed", outcome.message)
    assert by_type["Complete"].status is False
    assert by_type["Progressing"].status is False
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "BaselineFailed")]
    assert decide(Observation(0, outcome), stored(decision)).events == []


def test_too_many_failures_fail_the_search_and_each_failure_is_an_event() -> None:
    outcome = Outcome(OutcomeState.FAILED, OutcomeReason.TOO_MANY_FAILURES, "11 candidates failed, ...")
    failure = EvaluationResult.failed("0123456789abcdef", "shard 1: worker exited with code 137 (OOMKilled)")
    observation = Observation(3, outcome, ingested=[ArchiveRecord(generation=3, result=failure)])
    decision = decide(observation, {"phase": "Running"})
    assert decision.phase is Phase.FAILED
    assert conditions(decision)["Failed"].reason == "TooManyFailures"
    assert reasons(decision) == ["CandidateFailed", "TooManyFailures"]
    assert "OOMKilled" in decision.events[0].message


def test_a_finished_search_succeeds_once() -> None:
    outcome = Outcome(OutcomeState.SUCCEEDED, OutcomeReason.GENERATIONS_COMPLETED, "completed 3 generations")
    observation = Observation(3, outcome, advanced=True, hypervolume=0.41234)
    decision = decide(observation, {"phase": "Running"})
    assert decision.phase is Phase.SUCCEEDED
    by_type = conditions(decision)
    assert by_type["Complete"] == ConditionUpdate("Complete", True, "GenerationsCompleted", outcome.message)
    assert by_type["Failed"].status is False
    assert [(e.type, e.reason) for e in decision.events] == [
        ("Normal", "GenerationFinished"),
        ("Normal", "SearchFinished"),
    ]
    assert "hypervolume 0.4123" in decision.events[0].message
    assert decide(Observation(3, outcome), stored(decision)).events == []


def test_a_generation_that_advanced_is_no_longer_queued_or_pending() -> None:
    observation = Observation(
        1, RUNNING, advanced=True, hypervolume=0.2, queued="suspended", workers_pending="unschedulable"
    )
    decision = decide(observation, {})
    assert conditions(decision)["Queued"].status is False
    assert conditions(decision)["WorkersPending"].status is False
    assert conditions(decision)["Progressing"].message == "generation 2"
    assert reasons(decision) == ["GenerationFinished"]


def test_a_request_the_api_server_refuses_fails_the_search_until_the_spec_changes() -> None:
    blocked = Blocked("RequestRejected", 'Job.batch "s-g0001" is invalid: affinity', fatal=True)
    decision = decide(Observation(1, RUNNING, blocked=blocked), {"phase": "Running"})
    assert decision.phase is Phase.FAILED
    assert conditions(decision)["Failed"] == ConditionUpdate(
        "Failed", True, "RequestRejected", blocked.message
    )
    assert conditions(decision)["Progressing"].status is False
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "RequestRejected")]
    assert decide(Observation(1, RUNNING, blocked=blocked), stored(decision)).events == []


def test_only_a_search_the_engine_finished_at_its_spec_generation_needs_no_reconciling() -> None:
    outcome = Outcome(OutcomeState.SUCCEEDED, OutcomeReason.GENERATIONS_COMPLETED, "done")
    finished = stored(decide(Observation(3, outcome), {}))
    assert not needs_reconciling(finished | {"observedGeneration": 2}, 2)
    assert needs_reconciling(finished | {"observedGeneration": 2}, 3)  # the spec changed
    assert needs_reconciling({"phase": "Running", "observedGeneration": 2}, 2)
    assert needs_reconciling({}, 1)
    rejected = stored(
        decide(Observation(1, RUNNING, blocked=Blocked("RequestRejected", "x", fatal=True)), {})
    )
    assert needs_reconciling(rejected | {"observedGeneration": 2}, 2)  # not the engine's end: try again
    too_many = Outcome(OutcomeState.FAILED, OutcomeReason.TOO_MANY_FAILURES, "11 failed")
    assert not needs_reconciling(stored(decide(Observation(1, too_many), {})) | {"observedGeneration": 2}, 2)
