"""Kueue's waitForPodsReady (on by default in its newer releases) against a search: a generation
whose first pod never starts is evicted by Kueue when the timeout passes, requeued, and run again
with the same task; the search finishes with nothing counted failed and the same results as a run
that was never evicted, and the user saw the eviction as the Queued condition and event with
Kueue's reason.

A control plane and Kueue of this module's own: waitForPodsReady applies to every workload of a
Kueue, and the other Kueue tests must not run under it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from sustaindiffusion.api.crd import CRD_PATH
from sustaindiffusion.kube import names
from sustaindiffusion.search.records import ArchiveRecord
from tests.e2e.kueue.queues import History, apply, cluster_queue, kueue_spec
from tests.support.controlplane import ControlPlane
from tests.support.environment import admin_client, started_control_plane, started_kubelet
from tests.support.kubelet import TestKubelet
from tests.support.kueue import Kueue
from tests.support.searches import OperatorProcess, archive_records, run_standin_search, wait_event

PODS_READY_TIMEOUT_S = 10  # Kueue's: a pod held Pending past it gets its generation evicted
PODS_READY = {
    "waitForPodsReady": {
        "timeout": f"{PODS_READY_TIMEOUT_S}s",
        "blockAdmission": False,
        "requeuingStrategy": {"timestamp": "Eviction", "backoffBaseSeconds": 2, "backoffLimitCount": 10},
    }
}


@pytest.fixture(scope="module")
def control_plane() -> Iterator[ControlPlane]:
    with started_control_plane("sd-podsready-plane-") as plane:
        yield plane


@pytest.fixture(scope="module")
def kueue(control_plane: ControlPlane) -> Iterator[Kueue]:
    manager = Kueue(
        control_plane,
        control_plane.binaries.kubectl.parent,
        control_plane.workdir / "kueue",
        configuration_overrides=PODS_READY,
    )
    manager.start()
    try:
        yield manager
    finally:
        manager.stop()


@pytest.fixture(scope="module")
def api_client(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with admin_client(control_plane) as api:
        yield api


@pytest.fixture(scope="module")
def test_kubelet(api_client: client.ApiClient) -> Iterator[TestKubelet]:
    with started_kubelet(api_client, "sd-podsready-kubelet-") as kubelet:
        yield kubelet


@pytest.fixture(scope="module")
def crd_installed(control_plane: ControlPlane, kueue: Kueue) -> None:
    control_plane.install_crds(CRD_PATH)
    apply(
        control_plane,
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "gpu"}},
    )


def results(records: list[ArchiveRecord]) -> dict[str, tuple[Any, ...]]:
    """Each candidate's result as the stand-in computed it from its task (settings and seeds)."""
    found = {}
    for record in records:
        metrics = record.result.metrics
        assert metrics is not None, f"{record.result.candidate_id} failed: {record.result.reason}"
        found[record.result.candidate_id] = (
            metrics.gender_bias,
            metrics.ethnic_bias,
            metrics.quality,
            metrics.energy_joules_per_image,
        )
    return found


def test_a_generation_evicted_for_pods_not_ready_is_requeued_and_nothing_is_lost(
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    test_kubelet: TestKubelet,
    namespace: str,
    operator: OperatorProcess,
) -> None:
    cluster_queue(control_plane, namespace, gpus=3)
    spec = kueue_spec()
    spec["algorithm"] = {**spec["algorithm"], "generations": 1}

    # The first worker pod of the evicted search never starts; its replacement after the requeue does.
    held: set[str] = set()

    def first_pod_never_starts(pod: dict[str, Any]) -> bool:
        labels = pod["metadata"].get("labels") or {}
        if pod["metadata"]["namespace"] != namespace or labels.get(names.LABEL_SEARCH) != "evicted":
            return False
        if not held:
            held.add(pod["metadata"]["uid"])
        return pod["metadata"]["uid"] in held

    test_kubelet.holds.append(first_pod_never_starts)
    try:
        with History(api_client, namespace) as history:
            final = run_standin_search(api_client, test_kubelet, operator, namespace, "evicted", spec)
    finally:
        test_kubelet.holds.remove(first_pod_never_starts)
    assert held, "no worker pod was held"

    # Kueue evicted it for its pods, and the user saw why: the Queued condition and an event.
    queued = history.states.get("evicted", set())
    assert ("True", "KueuePodsReadyTimeout") in queued, queued
    try:
        wait_event(
            api_client,
            namespace,
            lambda e: (
                e.involved_object.name == "evicted" and e.reason == "Queued" and "PodsReady" in e.message
            ),
            "the Queued event with Kueue's PodsReady reason",
        )
    except TimeoutError:
        events = client.CoreV1Api(api_client).list_namespaced_event(namespace).items
        raise AssertionError([(e.involved_object.name, e.reason, e.message) for e in events]) from None
    # Nothing counted failed, each candidate told once.
    assert final["status"]["evaluations"]["failed"] == 0
    evicted = archive_records(api_client, namespace, "evicted")
    told = [record.result.candidate_id for record in evicted]
    assert len(told) == len(set(told))

    # The same spec never evicted gives the same results: the rerun used the same seeds.
    run_standin_search(api_client, test_kubelet, operator, namespace, "never-evicted", spec)
    assert results(evicted) == results(archive_records(api_client, namespace, "never-evicted"))
