"""What a round's Job and pods say about its shards: a pure function over plain dicts.

A shard settles when its Job gives it up (`status.failedIndexes`: the Job's retries are spent or
the worker said the task cannot succeed; the reason comes from its last failed pod, whose message
or log tail is read by the same decoder as reports), or when a pod of it succeeds: then its report
is read, checked against the shard's own candidates, and a report that is unreadable, partial, or
names a fatal error with exit code 0 leaves the missing candidates without a usable result (the
loop retries them). A shard the Job counts complete whose pods are gone (garbage-collected, a node
removed) settles with no result. Only pods owned by the round's Job (by uid) count: a pod that merely
carries the labels is ignored. A suspended Job is queued (Kueue holds it, or preempted it); pods that
cannot be scheduled or cannot pull their image make the workers pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sustaindiffusion.api.contract import shard_failure_reason
from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.kube.builders import WORKER_CONTAINER
from sustaindiffusion.search.loop import Collected, ShardOutcome, report_outcome

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
STUCK_WAITING_REASONS = {"ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName"}

Body = dict[str, Any]


def classify_round(
    job: Body | None, pods: Sequence[Body], task: EvaluationTask, selected: bool = False
) -> Collected:
    """The round's settled shards, and why the rest waits. `pods` may hold any pods: only those
    owned by `job` count, unless `selected`: the round's pods in another cluster, where MultiKueue's
    copy of `job` owns them (picked by the search's uid and the round's labels; `job`'s status is
    the copy's, mirrored)."""
    collected = Collected()
    if job is None:
        return collected
    if (job.get("spec") or {}).get("suspend"):
        collected.queued = "its Job is suspended (queued or preempted, e.g. by Kueue)"
    status = job.get("status") or {}
    failed_indexes = set(parse_indexes(status.get("failedIndexes")))
    completed_indexes = set(parse_indexes(status.get("completedIndexes")))
    job_uid = (job.get("metadata") or {}).get("uid")
    by_index: dict[int, list[Body]] = {}
    for pod in pods:
        if (selected or _owned_by(pod, job_uid)) and 0 <= (index := pod_index(pod)) < task.shard_count:
            by_index.setdefault(index, []).append(pod)
    for index in range(task.shard_count):
        ordered = sorted(
            by_index.get(index, []), key=lambda p: str(p["metadata"].get("creationTimestamp", ""))
        )
        terminal = [p for p in ordered if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
        succeeded = [p for p in terminal if (p.get("status") or {}).get("phase") == "Succeeded"]
        if succeeded:
            message = (worker_terminated(succeeded[-1]) or {}).get("message") or ""
            collected.shards[index] = report_outcome(task, index, message, len(terminal))
        elif index in failed_indexes:
            failed = [p for p in terminal if (p.get("status") or {}).get("phase") == "Failed"]
            reason = failure_reason(index, failed[-1], worker_terminated(failed[-1])) if failed else None
            collected.shards[index] = ShardOutcome(
                failure=reason
                or f"shard {index} failed; its pods were deleted before their failure was read",
                attempts=max(1, len(terminal)),
                final=True,
            )
        elif index in completed_indexes:
            collected.shards[index] = ShardOutcome(
                failure=f"shard {index}: its pod was removed before its report was read",
                attempts=max(1, len(terminal)),
            )
        for pod in ordered:
            if (pod.get("status") or {}).get("phase") == "Pending" and not collected.workers_pending:
                collected.workers_pending = pending_reason(pod)
    return collected


Signal = tuple[object, ...]


def pod_signal(pod: Body) -> Signal:
    """What `classify_round` reads of a worker pod: whether it ended and how, and why it cannot run
    (a pod starting or running without trouble reads the same as a new one)."""
    phase = (pod.get("status") or {}).get("phase")
    ended = phase if phase in ("Succeeded", "Failed") else None
    return (ended, pending_reason(pod) if phase == "Pending" else None)


def job_signal(job: Body) -> Signal:
    """What `classify_round` reads of a worker Job and its pods do not show first: suspension, and
    which indexes the Job gave up. (A completed index shows first as its pod's success, unless the
    Job is managed elsewhere, by MultiKueue: its pods are in another cluster, unwatched, and its
    mirrored status shows it first.)"""
    status = job.get("status") or {}
    spec = job.get("spec") or {}
    completed = status.get("completedIndexes") or "" if spec.get("managedBy") else ""
    return (bool(spec.get("suspend")), status.get("failedIndexes") or "", completed)


NEW_POD: Signal = (None, None)
NEW_JOB: Signal = (False, "", "")


def _owned_by(pod: Body, uid: str | None) -> bool:
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    return uid is not None and any(owner.get("uid") == uid for owner in owners)


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
