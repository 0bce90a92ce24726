"""MultiKueue with a plain batch/v1 Job: created in the manager, it runs in a worker cluster (its
copy there, its pod on that worker's test kubelet) and the manager's Job gets the copy's status;
and when the worker running it disappears, the Workload goes to the other worker after
`workerLostTimeout`. What these tests found is written down in MULTIKUEUE.md beside them."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from tests.e2e.multikueue.conftest import PODS_READY_TIMEOUT_S, WORKER_LOST_TIMEOUT_S, full_only
from tests.support.multikueue import (
    ADMISSION_CHECK,
    LOCAL_QUEUE,
    MULTIKUEUE_CONTROLLER,
    QUEUE_LABEL,
    Cluster,
    MultiKueueEnvironment,
    admission_check_state,
    condition,
)
from tests.support.processes import Poller, wait_until

pytestmark = pytest.mark.multikueue

Pod = dict[str, Any]


def job_manifest(name: str, command: list[str]) -> dict[str, Any]:
    """A suspended Job for the LocalQueue, one pod of one GPU; no managedBy (Kueue's webhook sets it)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {QUEUE_LABEL: LOCAL_QUEUE}},
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox",  # the test kubelet runs the command on this machine
                            "command": command,
                            "resources": {
                                "requests": {"cpu": "1", "memory": "1Gi"},
                                "limits": {"nvidia.com/gpu": "1"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


class Timeline:
    """When each observed value first changed, in seconds since the timeline began."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.entries: list[tuple[float, str, str]] = []
        self.stamps: dict[str, dt.datetime] = {}  # the first server timestamp seen of each key
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.started

    def note(self, key: str, value: object) -> None:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        with self._lock:
            if self._last.get(key) != text:
                self._last[key] = text
                self.entries.append((self.now(), key, text))

    def stamp(self, key: str, value: str | None) -> None:
        with self._lock:
            if value and key not in self.stamps:
                self.stamps[key] = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))

    def first(self, key: str, predicate: Callable[[str], bool]) -> float | None:
        with self._lock:
            return next((t for t, k, v in self.entries if k == key and predicate(v)), None)

    def render(self) -> str:
        with self._lock:
            return "\n".join(f"  {t:7.1f} s  {k}: {v}" for t, k, v in self.entries)


def workload_view(workload: dict[str, Any] | None) -> dict[str, Any]:
    """What a timeline keeps of a Workload: where it runs, the check's state, its conditions."""
    if workload is None:
        return {}
    status = workload.get("status") or {}
    check = admission_check_state(workload) or {}
    return {
        "clusterName": status.get("clusterName"),
        "nominatedClusterNames": status.get("nominatedClusterNames"),
        "check": [check.get("state"), check.get("message")],
        "conditions": {c["type"]: [c["status"], c.get("reason")] for c in status.get("conditions") or []},
    }


def watch(env: MultiKueueEnvironment, namespace: str, job: str, timeline: Timeline) -> Callable[[], None]:
    """A probe that notes the manager's Workload and Job, each MultiKueueCluster's Active condition
    and, in each worker whose API server runs, the Job's copy and its pods."""

    def probe() -> None:
        workload = env.manager.workload_of_job(namespace, job)
        timeline.note("manager Workload", workload_view(workload))
        check = admission_check_state(workload) or {}
        if check.get("state") == "Ready":
            timeline.stamp("ready", check.get("lastTransitionTime"))
        evicted = condition(workload, "Evicted") or {}
        if evicted.get("status") == "True":
            timeline.note("manager Workload Evicted", [evicted.get("reason"), evicted.get("message")])
        manager_job = env.manager.job(namespace, job) or {}
        status = manager_job.get("status") or {}
        timeline.note(
            "manager Job",
            {
                "suspend": (manager_job.get("spec") or {}).get("suspend"),
                "active": status.get("active"),
                "succeeded": status.get("succeeded"),
                "conditions": [c["type"] for c in status.get("conditions") or [] if c["status"] == "True"],
            },
        )
        active = condition(env.manager.kueue_object("admissionchecks", ADMISSION_CHECK), "Active") or {}
        timeline.note("AdmissionCheck", [active.get("status"), active.get("reason"), active.get("message")])
        for name, worker in env.workers.items():
            active = condition(env.multikueue_cluster(name), "Active") or {}
            timeline.note(f"MultiKueueCluster {name}", [active.get("status"), active.get("reason")])
            if name in env.stopped_workers:
                continue
            copy = worker.job(namespace, job)
            timeline.note(f"{name} Job copy", "present" if copy else "absent")
            remote = worker.workloads(namespace)
            timeline.note(
                f"{name} Workload",
                {
                    found["metadata"]["name"]: {
                        c["type"]: [c["status"], c.get("reason")]
                        for c in found["status"].get("conditions") or []
                    }
                    for found in remote
                },
            )
            pods = worker.pods_of_job(namespace, job)
            timeline.note(f"{name} pods", sorted((p["status"].get("phase") or "") for p in pods))

    return probe


def running_pod(worker: Cluster, namespace: str, job: str) -> Pod | None:
    return next(
        (p for p in worker.pods_of_job(namespace, job) if (p.get("status") or {}).get("phase") == "Running"),
        None,
    )


def job_condition(cluster: Cluster, namespace: str, name: str, kind: str) -> bool:
    found = condition(cluster.job(namespace, name), kind)
    return bool(found and found["status"] == "True")


def raw_workload_events(env: MultiKueueEnvironment, namespace: str, workload: str) -> list[Any]:
    """The manager's events of the Workload, oldest first (by when each was last recorded)."""
    events = env.manager.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={workload}"
    )
    return sorted(events.items, key=lambda e: event_time(e, last=True))


def event_time(event: Any, last: bool = False) -> dt.datetime:
    stamp = (event.last_timestamp if last else event.first_timestamp) or event.event_time
    return cast(dt.datetime, stamp or event.metadata.creation_timestamp)


def workload_events(env: MultiKueueEnvironment, namespace: str, workload: str) -> list[str]:
    """The manager's events of the Workload as text; "(xN)" when one was recorded N times (the
    recorder folds repeats of a reason and message into one Event, and Kueue records the same
    reservation more than once at times)."""
    return [
        f"{e.type} {e.reason}: {e.message}" + (f" (x{e.count})" if (e.count or 1) > 1 else "")
        for e in raw_workload_events(env, namespace, workload)
    ]


def first_event(
    env: MultiKueueEnvironment, namespace: str, workload: str, reason: str, text: str = ""
) -> Any | None:
    return next(
        (
            e
            for e in raw_workload_events(env, namespace, workload)
            if e.reason == reason and text in (e.message or "")
        ),
        None,
    )


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def metadata_of(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return json.dumps(
        {"labels": meta.get("labels"), "annotations": meta.get("annotations")}, indent=1, sort_keys=True
    )


def test_a_job_created_in_the_manager_runs_in_a_worker_and_its_completion_is_mirrored_back(
    multikueue: MultiKueueEnvironment, namespace: str, tmp_path: Path
) -> None:
    env, name = multikueue, "hello"
    timeline = Timeline()
    # The pod waits for the gate, so that its copies are read while they exist: once the Job
    # completes, the manager deletes the worker's Workload and Job (and so the pod).
    gate = tmp_path / "gate"
    command = [
        "python3",
        "-c",
        f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.1)\nprint('hello')",
    ]
    with Poller(watch(env, namespace, name, timeline)):
        env.manager.batch.create_namespaced_job(namespace, job_manifest(name, command))
        created = env.manager.job(namespace, name)
        assert created is not None

        def placed() -> str | None:
            workload = env.manager.workload_of_job(namespace, name)
            return ((workload or {}).get("status") or {}).get("clusterName")

        wait_until(placed, 60, what="the manager's Workload to name its worker cluster")
        cluster_name = placed()
        assert cluster_name in env.workers
        dispatched = timeline.now()
        worker = env.workers[cluster_name]
        other = next(w for n, w in env.workers.items() if n != cluster_name)
        wait_until(
            lambda: running_pod(worker, namespace, name), 60, what=f"the Job's pod Running in {cluster_name}"
        )
        running = timeline.now()
        workload = env.manager.workload_of_job(namespace, name)
        assert workload is not None
        copy = worker.job(namespace, name)
        pod = running_pod(worker, namespace, name)
        remote_workload = next(
            (w for w in worker.workloads(namespace) if w["metadata"]["name"] == workload["metadata"]["name"]),
            None,
        )
        # The other worker's Workload copy (the dispatcher sent one to every worker) is deleted
        # once the chosen worker admitted it; it never had a Job copy.
        wait_until(lambda: not other.workloads(namespace), 30, what=f"no Workload copy left in {other.name}")
        assert other.job(namespace, name) is None
        gate.touch()
        wait_until(
            lambda: job_condition(env.manager, namespace, name, "Complete"),
            60,
            what="the manager's Job to be Complete",
        )
        completed = timeline.now()
        finished = env.manager.workload_of_job(namespace, name)
        wait_until(
            lambda: worker.job(namespace, name) is None and not worker.workloads(namespace),
            60,
            what=f"the copies in {cluster_name} deleted",
        )
        cleaned = timeline.now()

    assert copy is not None
    assert pod is not None
    assert remote_workload is not None
    # Kueue's Job webhook set it: the Job's LocalQueue leads to a ClusterQueue with a MultiKueue
    # admission check (the Job was created without it).
    assert created["spec"].get("managedBy") == MULTIKUEUE_CONTROLLER, created["spec"]
    check = admission_check_state(workload)
    assert check is not None
    assert check["state"] == "Ready", check
    assert check["message"] == f'The workload got reservation on "{cluster_name}"', check
    assert condition(finished, "Finished") is not None
    assert pod["spec"]["nodeName"] == worker.node_name
    assert copy["metadata"]["labels"]["kueue.x-k8s.io/multikueue-origin"] == env.origin
    assert copy["metadata"]["labels"]["kueue.x-k8s.io/prebuilt-workload-name"] == workload["metadata"]["name"]
    assert copy["spec"].get("managedBy") is None
    manager_job = env.manager.job(namespace, name)
    assert manager_job is not None
    assert manager_job["status"].get("succeeded") == 1
    print(
        f"\nJob {name}: spec.managedBy after create {created['spec'].get('managedBy')!r}; Workload on "
        f"{cluster_name} at {dispatched:.1f} s, pod Running there at {running:.1f} s, gate opened; "
        f"manager's Job Complete at {completed:.1f} s; worker copies deleted at {cleaned:.1f} s"
        f"\nmanager Workload {workload['metadata']['name']}: status.clusterName={cluster_name!r}, "
        f"check {check['state']}: {check['message']!r}"
        f"\nmanager Workload metadata: {metadata_of(workload)}"
        f"\nworker Workload {remote_workload['metadata']['name']} metadata: {metadata_of(remote_workload)}"
        f"\nworker Workload spec.queueName={remote_workload['spec'].get('queueName')!r} status.admission="
        f"{json.dumps((remote_workload.get('status') or {}).get('admission'), sort_keys=True)}"
        f"\nworker Job copy {copy['metadata']['name']}: managedBy={copy['spec'].get('managedBy')!r} "
        f"suspend={copy['spec'].get('suspend')} metadata: {metadata_of(copy)}"
        f"\nworker pod {pod['metadata']['name']} on {pod['spec']['nodeName']}: {metadata_of(pod)}"
        f"\nworker pod ownerReferences: {json.dumps(pod['metadata'].get('ownerReferences'))}"
        f"\nmanager Job status: {json.dumps(manager_job['status'], sort_keys=True)}"
        f"\nmanager Workload events: {workload_events(env, namespace, workload['metadata']['name'])}"
        f"\ntimeline:\n{timeline.render()}"
    )


@full_only
def test_a_workload_on_a_lost_worker_is_dispatched_to_the_other_after_the_worker_lost_timeout(
    multikueue: MultiKueueEnvironment, namespace: str, tmp_path: Path
) -> None:
    env, name = multikueue, "long"
    lost = threading.Event()
    gate = tmp_path / "gate"

    def short_once_lost(pod: Pod, argv: list[str]) -> list[str] | None:
        """The Job sleeps 600 s; a pod started after the worker was lost ends when the gate opens
        (the test reads it first: the manager deletes the worker's copies once the Job completes)."""
        if not lost.is_set() or pod["metadata"]["namespace"] != namespace:
            return None
        return ["sh", "-c", f'while [ ! -e "{gate}" ]; do sleep 0.1; done']

    for worker in env.workers.values():
        worker.kubelet.programs.append(short_once_lost)
    timeline = Timeline()
    try:
        with Poller(watch(env, namespace, name, timeline)):
            env.manager.batch.create_namespaced_job(namespace, job_manifest(name, ["sleep", "600"]))

            def running_somewhere() -> tuple[Cluster, Pod] | None:
                for worker in env.workers.values():
                    pod = running_pod(worker, namespace, name)
                    if pod is not None:
                        return worker, pod
                return None

            wait_until(running_somewhere, 90, interval=0.1, what="the Job's pod Running in a worker")
            found = running_somewhere()
            assert found is not None
            first, first_pod = found
            running_at = timeline.now()
            lost.set()
            env.stop_worker_api_server(first.name)
            stopped_at = timeline.now()
            timeline.note("test", f"{first.name}'s API server stopped")
            second = next(w for w in env.workers.values() if w is not first)

            def placed_on_second() -> bool:
                workload = env.manager.workload_of_job(namespace, name)
                return ((workload or {}).get("status") or {}).get("clusterName") == second.name

            wait_until(
                placed_on_second,
                WORKER_LOST_TIMEOUT_S + 120,
                what=f"the manager's Workload to move to {second.name}",
            )
            moved_at = timeline.now()
            wait_until(
                lambda: running_pod(second, namespace, name),
                60,
                what=f"the Job's pod Running in {second.name}",
            )
            second_pod = running_pod(second, namespace, name)
            gate.touch()
            wait_until(
                lambda: job_condition(env.manager, namespace, name, "Complete"),
                90,
                what="the manager's Job to be Complete",
            )
            completed_at = timeline.now()
            workload = env.manager.workload_of_job(namespace, name)
            assert workload is not None
            events = workload_events(env, namespace, workload["metadata"]["name"])
            eviction = first_event(env, namespace, workload["metadata"]["name"], "EvictedDueToAdmissionCheck")

            # The lost worker comes back: its stale copy (still running `sleep 600`, as a lost
            # cluster's pods would) is deleted by the manager once it reconnects.
            restart_started = timeline.now()
            env.restart_worker_api_server(first.name)
            reconnected_at = timeline.now()
            wait_until(
                lambda: first.job(namespace, name) is None and not first.pods_of_job(namespace, name),
                120,
                what=f"the stale copy in {first.name} to be deleted",
            )
            stale_gone_at = timeline.now()
    finally:
        for worker in env.workers.values():
            worker.kubelet.programs.remove(short_once_lost)

    ready_on_first = timeline.first("manager Workload", lambda v: '"Ready"' in v and first.name in v)
    inactive = timeline.first(f"MultiKueueCluster {first.name}", lambda v: '"False"' in v)
    assert ready_on_first is not None, timeline.render()
    assert inactive is not None, timeline.render()
    assert eviction is not None, events
    # By the API server's clock (seconds): the check went Ready on the first worker, and the
    # Workload was evicted for the check (its state Retry, "Reserving remote lost", too brief to
    # be polled) no sooner than workerLostTimeout after that.
    ready_stamp, evicted_stamp = timeline.stamps["ready"], event_time(eviction)
    assert (evicted_stamp - ready_stamp).total_seconds() >= WORKER_LOST_TIMEOUT_S - 1, events
    retried = timeline.first("manager Workload", lambda v: "Previously: Retry" in v)
    assert second_pod is not None
    assert second_pod["spec"]["nodeName"] == second.node_name
    print(
        f"\nfirst worker {first.name} ran pod {first_pod['metadata']['name']}"
        f" (Running at {running_at:.1f} s); its API server stopped at {stopped_at:.1f} s;"
        f" MultiKueueCluster inactive at {inactive:.1f} s; check Ready on {first.name} (seen) at"
        f" {ready_on_first:.1f} s; Workload evicted {(evicted_stamp - ready_stamp).total_seconds():.0f} s"
        f" after Ready by the API server's timestamps (seen Pending after Retry at {seconds(retried)});"
        f" Workload on {second.name} at {moved_at:.1f} s (its pod {second_pod['metadata']['name']});"
        f" manager Job Complete at {completed_at:.1f} s"
        f"\n{first.name} restarted in {reconnected_at - restart_started:.1f} s (Active again);"
        f" its stale copy deleted {stale_gone_at - reconnected_at:.1f} s later"
        f"\nmanager Workload events: {events}"
        f"\nmanager Workload at the end: {json.dumps(workload_view(workload), sort_keys=True)}"
        f"\ntimeline:\n{timeline.render()}"
    )


@full_only
def test_a_workload_whose_pods_are_not_ready_in_a_worker_is_evicted_there_and_dispatched_again(
    multikueue: MultiKueueEnvironment, namespace: str
) -> None:
    """The workers' waitForPodsReady: a pod no node can take stays Pending; the worker's Kueue
    evicts its Workload after the timeout and the manager dispatches the Workload again."""
    env, name = multikueue, "stuck"
    job = job_manifest(name, ["true"])
    job["spec"]["template"]["spec"]["nodeSelector"] = {"sustaindiffusion.io/no-such-node": "true"}
    timeline = Timeline()
    with Poller(watch(env, namespace, name, timeline)):
        env.manager.batch.create_namespaced_job(namespace, job)

        def ready_since() -> dt.datetime | None:
            """When the manager's check went Ready (a placement on a worker), if it is Ready."""
            check = admission_check_state(env.manager.workload_of_job(namespace, name)) or {}
            if check.get("state") != "Ready":
                return None
            return dt.datetime.fromisoformat(check["lastTransitionTime"].replace("Z", "+00:00"))

        wait_until(ready_since, 60, what="the Workload placed on a worker")
        placed_at, first_ready = timeline.now(), ready_since()
        assert first_ready is not None
        workload = env.manager.workload_of_job(namespace, name)
        assert workload is not None
        workload_name = workload["metadata"]["name"]
        text = "Workload evicted on worker cluster"
        wait_until(
            lambda: first_event(env, namespace, workload_name, "MultiKueue", text),
            PODS_READY_TIMEOUT_S + 60,
            what="the Workload evicted in its worker",
        )
        evicted_at = timeline.now()
        wait_until(
            lambda: (since := ready_since()) is not None and since > first_ready,
            60,
            what="the Workload placed again",
        )
        placed_again_at = timeline.now()
        events = workload_events(env, namespace, workload_name)
        eviction = first_event(env, namespace, workload_name, "MultiKueue", text)
        env.manager.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        wait_until(
            lambda: all(
                w.job(namespace, name) is None and not w.workloads(namespace) for w in env.workers.values()
            ),
            60,
            what="the workers' copies deleted with the manager's Job",
        )
        deleted_at = timeline.now()

    assert eviction is not None
    assert any("EvictedDueToAdmissionCheck" in e for e in events), events
    # By the API server's clock (seconds): evicted in the worker no sooner than the timeout.
    assert (event_time(eviction) - first_ready).total_seconds() >= PODS_READY_TIMEOUT_S - 1, events
    timed_out = [
        seen
        for worker in env.workers
        if (seen := timeline.first(f"{worker} Workload", lambda v: "PodsReadyTimeout" in v)) is not None
    ]
    print(
        f"\nJob {name} (its pod fits no node): first placed at {placed_at:.1f} s; evicted in the"
        f" worker {(event_time(eviction) - first_ready).total_seconds():.0f} s after placement by the API"
        f" server's timestamps (waitForPodsReady {PODS_READY_TIMEOUT_S} s; PodsReadyTimeout polled at"
        f" {seconds(min(timed_out, default=None))}, the manager's event seen at {evicted_at:.1f} s);"
        f" placed again at {placed_again_at:.1f} s; the Job deleted in the manager and every copy gone at"
        f" {deleted_at:.1f} s"
        f"\nmanager Workload events: {events}"
        f"\ntimeline:\n{timeline.render()}"
    )
