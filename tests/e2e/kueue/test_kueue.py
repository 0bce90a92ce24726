"""Searches on a cluster that admits batch work through Kueue (its real controller manager, built
from its Go module): quota admission, queueing with Kueue's own reason, preemption by a
WorkloadPriorityClass, and partial admission when `parallelism` exceeds the quota. Workers are the
stand-in (deterministic metrics), slowed down where a test needs them running when Kueue acts."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sustaindiffusion.kube import names
from tests.e2e.kueue.queues import (
    KUEUE_GROUP,
    KUEUE_VERSION,
    LOCAL_QUEUE,
    History,
    apply,
    cluster_queue,
    kueue_spec,
)
from tests.support.controlplane import ControlPlane
from tests.support.kubelet import TestKubelet
from tests.support.kueue import Kueue
from tests.support.processes import wait_until
from tests.support.searches import (
    OperatorProcess,
    archive_records,
    create_search,
    pod_key,
    wait_phase,
)
from tests.support.standin_worker import PROGRAM


@pytest.fixture(scope="module", autouse=True)
def priorities(control_plane: ControlPlane, kueue: Kueue) -> None:
    apply(
        control_plane,
        {
            "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
            "kind": "ResourceFlavor",
            "metadata": {"name": "gpu"},
        },
        *(
            {
                "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
                "kind": "WorkloadPriorityClass",
                "metadata": {"name": name},
                "value": value,
                "description": f"{name} searches",
            }
            for name, value in (("background", 10), ("urgent", 1000))
        ),
    )


class Gate:
    """Worker pods held until the test opens the gate (a file they wait for), so what a test must
    see while they run (a Workload admitted, another search queued, a preemption) is seen however
    slow the machine, never raced by a guessed sleep. `search` and `generation` limit it to the
    pods of one search or one generation."""

    def __init__(self, path: Path, search: str | None, generation: int | None) -> None:
        self.path, self.search, self.generation = path, search, generation

    def open(self) -> None:
        self.path.touch()

    def holds(self, pod: dict[str, Any]) -> bool:
        labels = pod["metadata"].get("labels") or {}
        return (self.search is None or labels.get(names.LABEL_SEARCH) == self.search) and (
            self.generation is None or labels.get(names.LABEL_GENERATION) == str(self.generation)
        )


def gated_standin(
    kubelet: TestKubelet, namespace: str, gate: Gate | None
) -> Callable[[dict[str, Any], list[str]], Any]:
    """Worker pods of `namespace` run the stand-in worker, those `gate` holds once it is open."""

    def program(pod: dict[str, Any], argv: list[str]) -> list[str] | None:
        if pod_key(pod, namespace) is None:
            return None
        if gate is None or not gate.holds(pod):
            return [*PROGRAM, *argv[1:]]
        wait = f"while [ ! -e {gate.path} ]; do sleep 0.1; done"
        return ["sh", "-c", f'{wait}; exec "$@"', "sh", *PROGRAM, *argv[1:]]

    kubelet.programs.append(program)
    return program


@pytest.fixture
def standin(
    test_kubelet: TestKubelet, namespace: str, tmp_path: Path
) -> Iterator[Callable[[str | None, int | None], Gate]]:
    """Install the stand-in worker for the test's namespace; returns a closed gate (see Gate)."""
    installed: list[Any] = []

    def install(search: str | None, generation: int | None) -> Gate:
        gate = Gate(tmp_path / f"gate-{len(installed)}", search, generation)
        installed.append(gated_standin(test_kubelet, namespace, gate))
        return gate

    yield install
    for program in installed:
        test_kubelet.programs.remove(program)


def run_watched(
    api: client.ApiClient, namespace: str, operator: OperatorProcess, name: str, spec: dict[str, Any]
) -> tuple[dict[str, Any], History]:
    """Run one search to Succeeded while History records what Kueue and the operator said."""
    with History(api, namespace) as history:
        create_search(api, namespace, name, spec)
        search = wait_phase(api, namespace, name, operator)
    assert search["status"]["evaluations"]["failed"] == 0
    return search, history


def front_of(search: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    return sorted((e["candidateId"], e["objectives"]) for e in search["status"]["front"])


def test_a_generation_that_fits_the_quota_is_admitted_and_runs(
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    standin: Callable[[str | None, int | None], Gate],
) -> None:
    cluster_queue(control_plane, namespace, gpus=3)
    standin(None, None).open()
    started = time.monotonic()
    _, history = run_watched(api_client, namespace, operator, "fits", kueue_spec(parallelism=3))
    assert history.workloads, "Kueue made Workloads for the search's Jobs"
    assert all(w["spec"]["queueName"] == LOCAL_QUEUE for w in history.workloads.values())
    assert history.reserved, "Kueue reserved quota for them"
    assert not history.evicted
    assert ("False", "Admitted") in history.states["fits"]
    columns = control_plane.kubectl("get", "sds", "fits", "-n", namespace).stdout.split("\n")
    assert columns[0].split()[5:7] == ["QUEUE", "QUEUED"]
    assert columns[1].split()[5] == LOCAL_QUEUE
    print(f"admitted search: {time.monotonic() - started:.1f} s")


def test_searches_competing_for_the_quota_wait_with_kueues_reason_and_both_complete(
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    standin: Callable[[str | None, int | None], Gate],
) -> None:
    cluster_queue(control_plane, namespace, gpus=1)  # room for one worker pod of either search
    gate = standin(None, None)  # the admitted search holds the GPU until the other is seen waiting
    started = time.monotonic()
    with History(api_client, namespace) as history:
        for name in ("first", "second"):
            create_search(api_client, namespace, name, kueue_spec(parallelism=1))
        wait_until(lambda: history.queued, 120, what="a search queued behind the other")
        gate.open()
        finished = [wait_phase(api_client, namespace, name, operator) for name in ("first", "second")]
    assert all(search["status"]["evaluations"]["failed"] == 0 for search in finished)
    waits = [said for name in ("first", "second") for said in history.queued.get(name, [])]
    assert waits, f"one search waited for the other's quota; states seen: {history.states}"
    reasons = {reason for reason, _ in waits}
    assert "KueuePending" in reasons, waits
    messages = [message for reason, message in waits if reason == "KueuePending"]
    assert any(
        message.startswith(f"Kueue (LocalQueue {LOCAL_QUEUE}): ") and "quota for nvidia.com/gpu" in message
        for message in messages
    ), messages
    # The operator's own clock of the wait, the dashboard's "Time queued per search".
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    exported = urllib.request.urlopen(url, timeout=5).read().decode()
    waited = [
        float(line.rsplit(" ", 1)[1])
        for line in exported.splitlines()
        if line.startswith("sustaindiffusion_search_queued_seconds_total{")
        and f'namespace="{namespace}"' in line
    ]
    assert len(waited) == 2
    assert max(waited) > 0
    print(
        f"two searches, one GPU of quota: {time.monotonic() - started:.1f} s; queued {waited} s; "
        f"Kueue said: {messages[0]}"
    )


def test_a_preempted_generation_is_run_again_not_failed_and_the_front_is_the_undisturbed_one(
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    standin: Callable[[str | None, int | None], Gate],
    test_kubelet: TestKubelet,
) -> None:
    cluster_queue(control_plane, namespace, gpus=2)
    gate = standin("background", 1)  # runs once Kueue has preempted it for the urgent search
    spec = kueue_spec(parallelism=2, workloadPriorityClass="background")
    create_search(api_client, namespace, "alone", spec)
    undisturbed = wait_phase(api_client, namespace, "alone", operator)
    started = time.monotonic()
    with History(api_client, namespace) as history:
        create_search(api_client, namespace, "background", spec)

        def running_workers() -> bool:
            pods = client.CoreV1Api(api_client).list_namespaced_pod(
                namespace, label_selector=f"{names.LABEL_SEARCH}=background,{names.LABEL_GENERATION}=1"
            )
            return any(pod.status.phase == "Running" for pod in pods.items)

        wait_until(running_workers, 120, interval=0.2, what="the background search's generation 1 running")
        create_search(
            api_client, namespace, "urgent", kueue_spec(parallelism=2, workloadPriorityClass="urgent")
        )
        wait_until(lambda: history.evicted, 120, what="Kueue to preempt the background search")
        gate.open()
        urgent = wait_phase(api_client, namespace, "urgent", operator)
        background = wait_phase(api_client, namespace, "background", operator)
    assert history.evicted, "Kueue preempted the background search's Workload"
    assert any("Preempted" in message or "preempt" in message.lower() for message in history.evicted.values())
    assert any(
        reason in ("KueuePreempted", "KueueEvicted", "KueuePending")
        for reason, _ in history.queued.get("background", [])
    ), f"the background search's Queued conditions seen: {history.states.get('background')}"
    assert urgent["status"]["evaluations"]["failed"] == 0
    # The preempted shards ran again: no candidate failed, and the search ended where an
    # undisturbed run of the same spec ended.
    assert background["status"]["evaluations"]["failed"] == 0
    assert (
        background["status"]["evaluations"]["succeeded"] == undisturbed["status"]["evaluations"]["succeeded"]
    )
    assert front_of(background) == front_of(undisturbed)
    archived = sorted(
        (r.generation, r.result.candidate_id) for r in archive_records(api_client, namespace, "background")
    )
    assert archived == sorted(
        (r.generation, r.result.candidate_id) for r in archive_records(api_client, namespace, "alone")
    )
    print(f"preemption: {time.monotonic() - started:.1f} s; evictions: {list(history.evicted.values())[:1]}")


def test_parallelism_beyond_the_quota_is_partially_admitted_and_the_search_completes(
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    standin: Callable[[str | None, int | None], Gate],
) -> None:
    cluster_queue(control_plane, namespace, gpus=2)
    gate = standin(None, 1)  # generation 1 waits until its Workload of 3 pods was seen admitted
    started = time.monotonic()
    with History(api_client, namespace) as history:
        create_search(api_client, namespace, "wide", kueue_spec(parallelism=3))
        wait_until(
            lambda: any(asked == 3 for asked, _ in history.admitted_pods),
            120,
            what="a Workload of 3 pods admitted",
        )
        gate.open()
        search = wait_phase(api_client, namespace, "wide", operator)
    assert search["status"]["evaluations"]["failed"] == 0
    counts = sorted(history.admitted_pods)
    # A Job asking for 3 pods against 2 GPUs of quota runs with fewer (1 when the generation
    # before still held a GPU as the next was launched, else 2), never with all 3.
    assert any(asked == 3 and 0 < admitted < 3 for asked, admitted in counts), counts
    assert all(admitted <= 2 for _, admitted in counts), counts
    print(f"partial admission: {time.monotonic() - started:.1f} s; (pods asked, admitted): {counts}")
