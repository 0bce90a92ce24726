"""What a generation's Job and pods say about its shards: every path, on plain dicts."""

from __future__ import annotations

from typing import Any

from sustaindiffusion.api.results import EvaluationResult, Metrics
from sustaindiffusion.api.wire import ShardReport, encode_report
from sustaindiffusion.kube.classify import classify_generation

METRICS = Metrics(
    gender_bias=0.5, ethnic_bias=0.25, quality=0.6, energy_joules_per_image=10.0, seconds_per_image=1.0
)


def job(failed_indexes: str | None = None, suspend: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": "s-g0001"},
        "spec": {"suspend": suspend, "completions": 3},
        "status": {"failedIndexes": failed_indexes} if failed_indexes else {},
    }


def pod(index: int, phase: str, created: str = "2026-01-01T00:00:00Z", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"s-g0001-{index}-{created[-3:-1]}",
            "creationTimestamp": created,
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {"phase": phase, **status},
    }


def terminated(exit_code: int, reason: str, message: str = "") -> dict[str, Any]:
    state = {"exitCode": exit_code, "reason": reason}
    if message:
        state["message"] = message
    return {"containerStatuses": [{"name": "worker", "state": {"terminated": state}}]}


def report(shard: int, *ids: str) -> str:
    results = [EvaluationResult.succeeded(candidate_id, METRICS) for candidate_id in ids]
    return encode_report(ShardReport(generation=1, shard=shard, results=results))


def test_no_job_yet_is_nothing() -> None:
    collected = classify_generation(None, [], 3)
    assert (collected.results, collected.failed_shards, collected.queued, collected.workers_pending) == (
        [],
        {},
        None,
        None,
    )


def test_succeeded_pods_give_their_shard_results() -> None:
    pods = [
        pod(0, "Succeeded", **terminated(0, "Completed", report(0, "a" * 16, "b" * 16))),
        pod(1, "Running"),
    ]
    collected = classify_generation(job(), pods, 3)
    assert [(shard, r.candidate_id) for shard, r in collected.results] == [(0, "a" * 16), (0, "b" * 16)]
    assert collected.results[0][1].metrics == METRICS
    assert collected.failed_shards == {}


def test_a_suspended_job_is_queued() -> None:
    collected = classify_generation(job(suspend=True), [], 3)
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
    collected = classify_generation(job(), [unschedulable], 3)
    assert collected.workers_pending == (
        "pod s-g0001-0-00 is unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    )


def test_an_image_that_cannot_be_pulled_makes_the_workers_pending() -> None:
    waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:1"'}
    stuck = pod(2, "Pending", containerStatuses=[{"name": "worker", "state": {"waiting": waiting}}])
    collected = classify_generation(job(), [stuck], 3)
    assert collected.workers_pending == 'pod s-g0001-2-00: ImagePullBackOff: Back-off pulling image "nope:1"'
    # An ordinary wait (the container is being created) is not a reason to worry.
    creating = pod(
        2,
        "Pending",
        containerStatuses=[{"name": "worker", "state": {"waiting": {"reason": "ContainerCreating"}}}],
    )
    assert classify_generation(job(), [creating], 3).workers_pending is None


def test_a_given_up_shard_carries_its_last_failure() -> None:
    pods = [
        pod(1, "Failed", "2026-01-01T00:00:01Z", **terminated(137, "OOMKilled")),
        pod(
            1,
            "Failed",
            "2026-01-01T00:00:09Z",
            **terminated(75, "Error", '{"v":1,"g":1,"s":1,"r":[],"x":"CUDA error: device lost"}'),
        ),
    ]
    collected = classify_generation(job(failed_indexes="1"), pods, 3)
    assert collected.failed_shards == {1: "shard 1: CUDA error: device lost"}
    oom = classify_generation(job(failed_indexes="1"), pods[:1], 3)
    assert oom.failed_shards == {1: "shard 1: worker exited with code 137 (OOMKilled)"}


def test_a_failed_pod_without_a_container_state_says_what_the_pod_says() -> None:
    evicted = pod(0, "Failed", reason="Evicted", message="The node was low on resource: memory.")
    collected = classify_generation(job(failed_indexes="0"), [evicted], 3)
    assert collected.failed_shards == {
        0: "shard 0: pod failed (Evicted: The node was low on resource: memory.)"
    }


def test_a_given_up_shard_whose_pods_are_gone_still_fails_with_a_reason() -> None:
    collected = classify_generation(job(failed_indexes="0,2"), [], 3)
    assert collected.failed_shards == {0: "shard 0 failed", 2: "shard 2 failed"}


def test_failed_indexes_outside_the_task_are_ignored() -> None:
    collected = classify_generation(job(failed_indexes="1-4"), [], 3)
    assert sorted(collected.failed_shards) == [1, 2]
