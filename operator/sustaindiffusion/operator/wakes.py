"""Which worker pod and Job events are worth a step of their search.

A generation's pods and Job change many times on their way (created, scheduled, started, ready,
counted by the Job controller), and each change is a watch event. A step reads only what
`kube.classify` reads (a pod's end and why it cannot run; a Job's suspension and settled indexes),
so only an event that changes that wakes the search: the others would each cost a step of reads
that decide nothing, in the queue before the searches that have results to take in. The slow
resync still steps every running search, so a missed event delays, never wedges.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from sustaindiffusion.kube.classify import NEW_JOB, NEW_POD, Signal, job_signal, pod_signal

STATUS_ONLY_DELAY_S = 3.0


class WorkerSignals:
    """The last signal seen of each worker pod and Job, by uid. Each event gets the delay after
    which its search should be stepped, or None for no step: at once for what settles shards (a pod
    that ended, a Job that gives indexes up, is suspended, or is deleted); after a few seconds for
    what only the status shows (why pods cannot run, or pods removed), so that a burst of those, as
    when a full cluster schedules pods one by one, costs one step, and never delays a settling one
    (the earlier schedule of a search wins)."""

    def __init__(self) -> None:
        self._pods: dict[str, Signal] = {}
        self._jobs: dict[str, Signal] = {}
        self._lock = threading.Lock()

    def pod_event(self, event_type: str | None, pod: Mapping[str, Any]) -> float | None:
        """The delay before a step for this event of a worker pod. A deleted pod matters when it had
        ended (a shard whose report goes with it) or showed why the workers cannot run."""
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        with self._lock:
            if event_type == "DELETED":
                return STATUS_ONLY_DELAY_S if self._pods.pop(uid, NEW_POD) != NEW_POD else None
            signal = pod_signal(dict(pod))
            last = self._pods.get(uid, NEW_POD)
            self._pods[uid] = signal
        if signal[0] != last[0]:
            return 0.0
        return STATUS_ONLY_DELAY_S if signal != last else None

    def job_event(self, event_type: str | None, job: Mapping[str, Any]) -> float | None:
        """The delay before a step for this event of a worker Job; a deletion always matters (a
        running generation's Job is created again)."""
        uid = str((job.get("metadata") or {}).get("uid", ""))
        with self._lock:
            if event_type == "DELETED":
                self._jobs.pop(uid, None)
                return 0.0
            signal = job_signal(dict(job))
            last = self._jobs.get(uid, NEW_JOB)
            self._jobs[uid] = signal
        return 0.0 if signal != last else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._pods) + len(self._jobs)
