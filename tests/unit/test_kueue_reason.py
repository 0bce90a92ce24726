"""Kueue's own reason for a queued generation, read from its Workload's conditions."""

from __future__ import annotations

from typing import Any

from sustaindiffusion.kube.kueue import queued_reason


def workload(*conditions: dict[str, str], created: str = "2026-12-01T00:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {"creationTimestamp": created},
        "spec": {"queueName": "team-a"},
        "status": {"conditions": list(conditions)},
    }


PENDING = {
    "type": "QuotaReserved",
    "status": "False",
    "reason": "Pending",
    "message": "couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu in flavor gpu",
}


def test_waiting_for_quota_shows_kueues_reason_and_message_with_the_queue() -> None:
    reason, message = queued_reason([workload(PENDING)], "team-a") or ("", "")
    assert reason == "KueuePending"
    assert message == f"Kueue (LocalQueue team-a): {PENDING['message']}"


def test_an_evicted_workload_says_who_preempted_it() -> None:
    evicted = {
        "type": "Evicted",
        "status": "True",
        "reason": "Preempted",
        "message": "Preempted to accommodate a workload (UID: 42) due to prioritization in the ClusterQueue",
    }
    released = PENDING | {"message": "quota released"}
    reason, message = queued_reason([workload(released, evicted)], None) or ("", "")
    assert reason == "KueuePreempted"
    assert "Preempted to accommodate a workload" in message
    assert message.startswith("Kueue (LocalQueue team-a): ")


def test_an_eviction_shows_before_kueue_has_released_the_quota() -> None:
    # Kueue suspends the Job at once and releases the quota once its pods have stopped: a step on
    # the suspension can read the Workload in between, and no other event comes before readmission.
    evicted = {
        "type": "Evicted",
        "status": "True",
        "reason": "Preempted",
        "message": "Preempted to accommodate",
    }
    still_reserved = {"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "ok"}
    reason, message = queued_reason([workload(still_reserved, evicted)], "team-a") or ("", "")
    assert reason == "KueuePreempted"
    assert message == "Kueue (LocalQueue team-a): Preempted to accommodate"
    # Admitted again: Kueue set Evicted False, and nothing holds the Job back.
    readmitted = evicted | {"status": "False", "reason": "QuotaReserved"}
    assert queued_reason([workload(still_reserved, readmitted)], "team-a") is None


def test_the_newest_workload_counts_and_an_admitted_one_says_nothing() -> None:
    admitted = {"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "ok"}
    old = workload(PENDING, created="2026-12-01T00:00:00Z")
    new = workload(admitted, created="2026-12-01T00:01:00Z")
    assert queued_reason([old, new], "team-a") is None
    assert queued_reason([], "team-a") is None
    fresh = queued_reason([workload()], "team-a")
    assert fresh is not None
    assert fresh[0] == "KueuePending"


TIMED_OUT = "Exceeded the PodsReady timeout team-a/job-s-g0001-1a2b3"


def test_a_workload_evicted_for_pods_not_ready_says_so_while_evicted_and_during_its_backoff() -> None:
    reserved = {"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "ok"}
    evicting = {"type": "Evicted", "status": "True", "reason": "PodsReadyTimeout", "message": TIMED_OUT}
    # Being evicted: the Job is suspended before the quota is released.
    assert queued_reason([workload(reserved, evicting)], None) == (
        "KueuePodsReadyTimeout",
        f"Kueue (LocalQueue team-a): {TIMED_OUT}",
    )
    # Released, the Workload waits out its requeuing backoff: Requeued False with the eviction's reason.
    backoff = {"type": "Requeued", "status": "False", "reason": "PodsReadyTimeout", "message": TIMED_OUT}
    released = PENDING | {"message": TIMED_OUT}
    assert queued_reason([workload(released, backoff)], None) == (
        "KueuePodsReadyTimeout",
        f"Kueue (LocalQueue team-a): {TIMED_OUT}",
    )
    # Admitted again: nothing to say.
    assert queued_reason([workload(reserved, backoff)], None) is None
