"""What Kueue says about a worker Job it holds back: a pure function over its Workload (a dict).

Kueue makes one Workload per Job (labelled with the Job's uid) and writes its decisions there as
conditions: `QuotaReserved` False with why it cannot fit (e.g. "couldn't assign flavors to pod set
main: insufficient quota for nvidia.com/gpu in flavor gpu, 1 more needed"), `Evicted` True when it
takes the quota back (reason Preempted, with who preempted it; PodsReadyTimeout under
waitForPodsReady), and while the evicted Workload waits out its requeuing backoff, `Requeued` False
with the eviction's reason. The operator shows that reason and message instead of "the Job is
suspended".

An eviction is shown from its start: Kueue suspends the Job at once but keeps `QuotaReserved` True
until the Job has no active pod, and the operator's step on the suspension may read the Workload in
between (it did in most runs on Kubernetes v1.37, README "Supported Kubernetes versions"). Nothing
else wakes that search before the Job is admitted again, so the eviction is its reason throughout.
Kueue sets `Evicted` False when it reserves quota for the Workload again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

GROUP, VERSION, PLURAL = "kueue.x-k8s.io", "v1beta2", "workloads"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"

Body = dict[str, Any]


def _condition(workload: Body, kind: str) -> Body | None:
    for condition in (workload.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def queued_reason(workloads: Sequence[Body], queue_name: str | None) -> tuple[str, str] | None:
    """Why Kueue holds the Job back, as a condition reason (`Kueue` + Kueue's own) and Kueue's
    message; None when no Workload says (yet)."""
    if not workloads:
        return None
    workload = max(workloads, key=lambda w: str((w.get("metadata") or {}).get("creationTimestamp", "")))
    queue = (workload.get("spec") or {}).get("queueName") or queue_name
    where = f"Kueue (LocalQueue {queue})" if queue else "Kueue"
    evicted = _condition(workload, "Evicted")
    reserved = _condition(workload, "QuotaReserved")
    requeued = _condition(workload, "Requeued")
    # Evicted True: being evicted, the quota not released yet, or released.
    if evicted and evicted.get("status") == "True":
        return _reason(evicted, "Evicted"), f"{where}: {evicted.get('message') or 'evicted'}"
    # Requeued False: evicted, and waiting out the backoff before Kueue considers it again.
    if requeued and requeued.get("status") == "False" and not (reserved and reserved.get("status") == "True"):
        return _reason(requeued, "Requeued"), f"{where}: {requeued.get('message') or 'requeued'}"
    if reserved and reserved.get("status") == "False":
        return _reason(reserved, "Pending"), f"{where}: {reserved.get('message') or 'waiting for quota'}"
    if reserved is None:
        return "KueuePending", f"{where}: waiting for Kueue to consider the Workload"
    return None


def placed_cluster(workloads: Sequence[Body]) -> str | None:
    """The worker cluster MultiKueue placed the Job's newest Workload in (`status.clusterName`);
    None when it runs here, or is not placed (yet, or again after its cluster was lost)."""
    if not workloads:
        return None
    workload = max(workloads, key=lambda w: str((w.get("metadata") or {}).get("creationTimestamp", "")))
    name = (workload.get("status") or {}).get("clusterName")
    return str(name) if name else None


def _reason(condition: Body, default: str) -> str:
    reason = "".join(ch for ch in str(condition.get("reason") or default) if ch.isalnum())
    return f"Kueue{reason}"
