"""What a generation's Job and pods say about its shards: a pure function over plain dicts.

Succeeded pods carry their shard's report in the worker container's termination message; the Job's
`status.failedIndexes` lists shards the Job gave up on, with the reason read from their last failed
pod; a suspended Job is queued (Kueue holds it, or preempted it); pods that cannot be scheduled or
cannot pull their image make the workers pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sustaindiffusion.api.contract import shard_failure_reason
from sustaindiffusion.api.wire import decode_report
from sustaindiffusion.kube.builders import WORKER_CONTAINER
from sustaindiffusion.search.loop import Collected

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
STUCK_WAITING_REASONS = {"ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName"}

Body = dict[str, Any]


def classify_generation(job: Body | None, pods: Sequence[Body], shard_count: int) -> Collected:
    """The shards' results, given-up shards with reasons, and why the rest waits."""
    collected = Collected()
    if job is None:
        return collected
    if (job.get("spec") or {}).get("suspend"):
        collected.queued = "its Job is suspended (queued or preempted, e.g. by Kueue)"
    failed_indexes = parse_indexes((job.get("status") or {}).get("failedIndexes"))
    last_failure: dict[int, str] = {}
    for pod in sorted(pods, key=lambda p: str(p["metadata"].get("creationTimestamp", ""))):
        index = pod_index(pod)
        phase = (pod.get("status") or {}).get("phase")
        terminated = worker_terminated(pod)
        if phase == "Succeeded" and terminated is not None:
            try:
                report = decode_report(terminated.get("message") or "")
            except ValueError as error:
                last_failure[index] = f"shard {index}: unreadable worker report ({error})"
                continue
            collected.results.extend((index, result) for result in report.results)
        elif phase == "Failed":
            last_failure[index] = failure_reason(index, pod, terminated)
        elif phase == "Pending":
            collected.workers_pending = collected.workers_pending or pending_reason(pod)
    for index in failed_indexes:
        if 0 <= index < shard_count:
            collected.failed_shards[index] = last_failure.get(index, f"shard {index} failed")
    return collected


def parse_indexes(text: str | None) -> list[int]:
    """Job index sets such as "1,3-5" to [1, 3, 4, 5]."""
    indexes: list[int] = []
    for part in (text or "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        indexes.extend(range(int(low), int(high or low) + 1))
    return indexes


def pod_index(pod: Body) -> int:
    try:
        return int((pod["metadata"].get("annotations") or {}).get(INDEX_ANNOTATION, "-1"))
    except ValueError:
        return -1


def worker_terminated(pod: Body) -> Body | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if status.get("name") == WORKER_CONTAINER and terminated:
            return dict(terminated)
    return None


def failure_reason(index: int, pod: Body, terminated: Body | None) -> str:
    if terminated is not None:
        return shard_failure_reason(
            index, terminated.get("exitCode"), terminated.get("reason"), terminated.get("message") or ""
        )
    status = pod.get("status") or {}
    return shard_failure_reason(
        index, None, f"pod failed ({status.get('reason') or 'unknown'}: {status.get('message') or ''})"
    )


def pending_reason(pod: Body) -> str | None:
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"pod {name} is unschedulable: {condition.get('message') or condition.get('reason')}"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") in STUCK_WAITING_REASONS:
            return f"pod {name}: {waiting['reason']}: {waiting.get('message') or ''}".strip()
    return None
