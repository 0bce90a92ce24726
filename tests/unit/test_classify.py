"""What a round's Job and pods say about its shards: every path, on plain dicts."""

from __future__ import annotations

from typing import Any

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.results import EvaluationResult, Metrics
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate
from sustaindiffusion.api.wire import ShardReport, encode_report
from sustaindiffusion.kube.classify import classify_round

METRICS = Metrics(
    gender_bias=0.5,
    ethnic_bias=0.25,
    quality=0.6,
    energy_joules_per_image=10.0,
    seconds_per_image=1.0,
    images=20,  # the task's: one prompt, 20 images
)
JOB_UID = "job-uid-1"
IDS = [f"{i:016x}" for i in range(6)]
TASK = EvaluationTask.of(
    "s",
    SustainSearchSpec.model_validate({"prompts": {"inline": ["p"]}}),
    generation=1,
    prompts=["p"],
    candidates=[TaskCandidate(candidate_id=i, settings=CandidateSettings()) for i in IDS],
    candidates_per_shard=2,
    save_images=False,
)


def job(failed: str | None = None, completed: str | None = None, suspend: bool = False) -> dict[str, Any]:
    status = {k: v for k, v in (("failedIndexes", failed), ("completedIndexes", completed)) if v}
    return {"metadata": {"name": "s-g0001", "uid": JOB_UID}, "spec": {"suspend": suspend}, "status": status}


def pod(
    index: int, phase: str, created: str = "2026-01-01T00:00:00Z", owner: str = JOB_UID, **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"s-g0001-{index}-{created[-3:-1]}",
            "creationTimestamp": created,
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "ownerReferences": [{"kind": "Job", "uid": owner}],
        },
        "status": {"phase": phase, **status},
    }


def terminated(exit_code: int, reason: str, message: str = "") -> dict[str, Any]:
    state = {"exitCode": exit_code, "reason": reason}
    if message:
        state["message"] = message
    return {"containerStatuses": [{"name": "worker", "state": {"terminated": state}}]}


def report(shard: int, *ids: str, fatal: str | None = None) -> str:
    results = [EvaluationResult.succeeded(candidate_id, METRICS) for candidate_id in ids]
    return encode_report(ShardReport(generation=1, shard=shard, results=results, fatal=fatal))


def succeeded(index: int, message: str, **kwargs: Any) -> dict[str, Any]:
    return pod(index, "Succeeded", **kwargs, **terminated(0, "Completed", message))


def test_no_job_yet_settles_nothing() -> None:
    collected = classify_round(None, [], TASK)
    assert (collected.shards, collected.queued, collected.workers_pending) == ({}, None, None)


def test_a_succeeded_pod_settles_its_shard_with_its_results() -> None:
    collected = classify_round(job(), [succeeded(0, report(0, IDS[0], IDS[1])), pod(1, "Running")], TASK)
    assert list(collected.shards) == [0]
    outcome = collected.shards[0]
    assert [r.candidate_id for r in outcome.results] == IDS[:2]
    assert outcome.results[0].metrics == METRICS
    assert (outcome.failure, outcome.final, outcome.attempts) == (None, False, 1)


def test_pods_not_owned_by_the_rounds_job_are_ignored() -> None:
    forged = succeeded(0, report(0, IDS[0], IDS[1]), owner="someone-else")
    assert classify_round(job(), [forged], TASK).shards == {}


def test_a_report_with_another_shards_candidates_is_unusable() -> None:
    collected = classify_round(job(), [succeeded(0, report(0, IDS[0], IDS[2]))], TASK)
    outcome = collected.shards[0]
    assert outcome.results == []
    assert outcome.failure is not None
    assert f"candidate {IDS[2]} is not one of this shard's" in outcome.failure
    assert not outcome.final  # the loop may evaluate the shard's candidates again


def test_malformed_partial_and_fatal_reports_settle_without_results() -> None:
    cases = {
        "": "the termination message is empty",
        '{"v":1,"g":1,"s":0,"r":[["' + IDS[0] + '",1,Infinity,0,0,0,0,0,0,0,1]]}': "unusable worker report",
        report(0, IDS[0]): "the worker's report has no result for this candidate",
        report(
            0, fatal="CUDA error: an illegal memory access"
        ): "shard 0: CUDA error: an illegal memory access",
        report(1, IDS[2], IDS[3]): "the report is for shard 1, not 0",
    }
    for message, why in cases.items():
        outcome = classify_round(job(), [succeeded(0, message)], TASK).shards[0]
        assert outcome.failure is not None
        assert why in outcome.failure, (message, outcome.failure)
        assert not outcome.final
    partial = classify_round(job(), [succeeded(0, report(0, IDS[0]))], TASK).shards[0]
    assert [r.candidate_id for r in partial.results] == [IDS[0]]


def test_a_suspended_job_is_queued() -> None:
    collected = classify_round(job(suspend=True), [], TASK)
    assert collected.queued is not None
    assert "suspended" in collected.queued


def test_an_unschedulable_pod_makes_the_workers_pending() -> None:
    unschedulable = pod(
        0,
        "Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
            }
        ],
    )
    collected = classify_round(job(), [unschedulable], TASK)
    assert collected.workers_pending == (
        "pod s-g0001-0-00 is unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    )
    assert collected.shards == {}


def test_an_image_that_cannot_be_pulled_makes_the_workers_pending() -> None:
    waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:1"'}
    stuck = pod(2, "Pending", containerStatuses=[{"name": "worker", "state": {"waiting": waiting}}])
    collected = classify_round(job(), [stuck], TASK)
    assert collected.workers_pending == 'pod s-g0001-2-00: ImagePullBackOff: Back-off pulling image "nope:1"'
    creating = pod(
        2,
        "Pending",
        containerStatuses=[{"name": "worker", "state": {"waiting": {"reason": "ContainerCreating"}}}],
    )
    assert classify_round(job(), [creating], TASK).workers_pending is None  # an ordinary wait


def test_a_given_up_shard_carries_its_last_failure_and_is_final() -> None:
    tail = '{"v":1,"g":1,"s":1,"r":[],"x":"CUDA error: device lost"}'
    pods = [
        pod(1, "Failed", "2026-01-01T00:00:01Z", **terminated(137, "OOMKilled")),
        pod(1, "Failed", "2026-01-01T00:00:09Z", **terminated(75, "Error", tail)),
    ]
    outcome = classify_round(job(failed="1"), pods, TASK).shards[1]
    assert (outcome.failure, outcome.attempts, outcome.final) == ("shard 1: CUDA error: device lost", 2, True)
    oom = classify_round(job(failed="1"), pods[:1], TASK).shards[1]
    assert oom.failure == "shard 1: worker exited with code 137 (OOMKilled)"
    log_tail = pod(1, "Failed", **terminated(1, "Error", "Traceback ...\nRuntimeError: boom"))
    assert (
        classify_round(job(failed="1"), [log_tail], TASK).shards[1].failure == "shard 1: RuntimeError: boom"
    )


def test_a_failed_pod_the_job_will_retry_does_not_settle_its_shard() -> None:
    assert classify_round(job(), [pod(1, "Failed", **terminated(137, "OOMKilled"))], TASK).shards == {}


def test_a_failed_pod_without_a_container_state_says_what_the_pod_says() -> None:
    evicted = pod(0, "Failed", reason="Evicted", message="The node was low on resource: memory.")
    outcome = classify_round(job(failed="0"), [evicted], TASK).shards[0]
    assert outcome.failure == "shard 0: pod failed (Evicted: The node was low on resource: memory.)"


def test_a_completed_shard_whose_pod_is_gone_settles_without_results() -> None:
    collected = classify_round(job(completed="0-1", failed="2"), [], TASK)
    assert collected.shards[0].failure == "shard 0: its pod was removed before its report was read"
    assert not collected.shards[0].final
    assert (
        collected.shards[2].failure == "shard 2 failed; its pods were deleted before their failure was read"
    )
    assert collected.shards[2].final


def test_indexes_outside_the_task_are_ignored() -> None:
    collected = classify_round(job(failed="1-4"), [succeeded(7, report(7))], TASK)
    assert sorted(collected.shards) == [1, 2]
