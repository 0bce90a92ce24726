"""Which worker pod and Job events step their search, and how soon."""

from __future__ import annotations

from typing import Any

from sustaindiffusion.kube.classify import job_signal, pod_signal
from sustaindiffusion.operator.wakes import STATUS_ONLY_DELAY_S, WorkerSignals


def pod(uid: str, phase: str, unschedulable: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "message": unschedulable}]
    return {"metadata": {"name": f"p-{uid}", "uid": uid}, "status": status}


def job(uid: str, suspend: bool = False, failed: str = "", completed: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": f"j-{uid}", "uid": uid},
        "spec": {"suspend": suspend},
        "status": {"failedIndexes": failed, "completedIndexes": completed, "active": 2},
    }


def test_a_pod_on_its_way_wakes_nobody_and_its_end_wakes_its_search_at_once() -> None:
    signals = WorkerSignals()
    assert signals.pod_event("ADDED", pod("a", "Pending")) is None
    assert signals.pod_event("MODIFIED", pod("a", "Running")) is None
    assert signals.pod_event("MODIFIED", pod("a", "Succeeded")) == 0.0
    assert signals.pod_event("MODIFIED", pod("a", "Succeeded")) is None  # the same end, seen again
    # Its deletion takes a shard's report away: the search looks again, soon.
    assert signals.pod_event("DELETED", pod("a", "Succeeded")) == STATUS_ONLY_DELAY_S
    assert len(signals) == 0


def test_why_a_pod_cannot_run_is_status_only_and_a_failure_is_at_once() -> None:
    signals = WorkerSignals()
    assert signals.pod_event(None, pod("b", "Pending", "0/1 nodes: Too many pods")) == STATUS_ONLY_DELAY_S
    assert signals.pod_event("MODIFIED", pod("b", "Pending", "0/1 nodes: Too many pods")) is None
    assert signals.pod_event("MODIFIED", pod("b", "Running")) == STATUS_ONLY_DELAY_S  # the reason went
    assert signals.pod_event("MODIFIED", pod("b", "Failed")) == 0.0
    assert signals.pod_event("DELETED", pod("c", "Running")) is None  # never showed anything


def test_a_pod_first_seen_ended_wakes_its_search() -> None:
    """After a restart, kopf lists pods that ended while the operator was down."""
    assert WorkerSignals().pod_event(None, pod("d", "Succeeded")) == 0.0


def test_a_job_wakes_its_search_when_it_gives_indexes_up_is_suspended_or_goes() -> None:
    signals = WorkerSignals()
    assert signals.job_event("ADDED", job("j")) is None  # the step that created it knows
    assert signals.job_event("MODIFIED", job("j", completed="0,1")) is None  # its pods said so first
    assert signals.job_event("MODIFIED", job("j", failed="2")) == 0.0
    assert signals.job_event("MODIFIED", job("j", suspend=True, failed="2")) == 0.0
    assert signals.job_event("DELETED", job("j")) == 0.0
    assert signals.job_event(None, job("k", suspend=True)) == 0.0  # created suspended, by a queue


def test_the_signals_are_what_classify_reads() -> None:
    assert pod_signal(pod("a", "Running")) == pod_signal(pod("a", "Pending"))
    assert pod_signal(pod("a", "Succeeded")) != pod_signal(pod("a", "Failed"))
    assert pod_signal(pod("a", "Pending", "no node")) != pod_signal(pod("a", "Pending"))
    assert job_signal(job("j", completed="0")) == job_signal(job("j"))
    assert job_signal(job("j", failed="0")) != job_signal(job("j"))
