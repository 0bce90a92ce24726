"""SustainSearches through MultiKueue: the operator on the manager cluster, its worker Jobs run in
worker clusters, and the results back intact, read with the least-privilege credentials of the
charts/worker-access chart. A search whose generation runs in a worker that then disappears
finishes in the other worker with nothing lost or counted twice, and its archive equals that of
the same spec run in one cluster."""

from __future__ import annotations

import base64
import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sustaindiffusion.api.crd import CRD_PATH
from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from sustaindiffusion.kube import builders
from sustaindiffusion.kube.executor import CLUSTER_UNREACHABLE
from sustaindiffusion.search.records import ArchiveRecord
from tests.e2e.multikueue.conftest import FULL
from tests.support.chart import CHART, helm
from tests.support.multikueue import LOCAL_QUEUE, Cluster, MultiKueueEnvironment
from tests.support.processes import wait_until
from tests.support.searches import (
    OperatorProcess,
    archive_records,
    create_search,
    get_search,
    pod_key,
    standin_spec,
    wait_event,
    wait_phase,
)
from tests.support.standin_worker import PROGRAM

pytestmark = pytest.mark.multikueue

ACCESS_CHART = CHART.parent / "worker-access"
READER = "sustaindiffusion-results-reader"
# (verb, resource, allowed in the search's namespace): what the worker-access chart grants.
CAN_I = [
    ("get", "pods", True),
    ("list", "pods", True),
    ("patch", "pods", True),
    ("create", "pods", False),
    ("delete", "pods", False),
    ("get", "pods --subresource=log", False),
    ("create", "pods --subresource=exec", False),
    ("get", "jobs.batch", False),
    ("get", "secrets", False),
    ("get", "configmaps", False),
]


def spec() -> dict[str, Any]:
    population, generations = (8, 3) if FULL else (4, 1)
    return standin_spec(
        algorithm={"populationSize": population, "generations": generations, "seed": 11},
        execution={"queueName": LOCAL_QUEUE, "candidatesPerPod": 2, "parallelism": 2},
    )


def worker_credentials(multikueue: MultiKueueEnvironment, namespace: str, directory: Path) -> Path:
    """In each worker, the worker-access chart for `namespace`; on the manager's side a kubeconfig
    per worker with its ServiceAccount's token (the operator's --worker-clusters directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, worker in multikueue.workers.items():
        helm(
            worker.control_plane,
            "install",
            f"access-{namespace}",
            str(ACCESS_CHART),
            "--namespace",
            namespace,
        )
        token = worker.core.create_namespaced_service_account_token(
            READER, namespace, {"spec": {"expirationSeconds": 3600}}
        ).status.token
        certs = worker.control_plane.certs
        assert certs is not None
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": name,
                    "cluster": {
                        "server": worker.control_plane.server,
                        "certificate-authority-data": base64.b64encode(certs.ca_cert.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": READER, "user": {"token": token}}],
            "contexts": [
                {"name": name, "context": {"cluster": name, "user": READER, "namespace": namespace}}
            ],
            "current-context": name,
        }
        (directory / name).write_text(yaml.safe_dump(kubeconfig))
    return directory


def yes_no(allowed: bool) -> str:
    return "yes" if allowed else "no"


def can_i(worker: Cluster, namespace: str, verb: str, resource: str, where: str) -> bool:
    result = worker.control_plane.kubectl(
        "auth",
        "can-i",
        verb,
        *resource.split(),  # "pods --subresource=log": pods/log would ask for a pod named log
        "-n",
        where,
        f"--as=system:serviceaccount:{namespace}:{READER}",
        check=False,
    )
    return result.stdout.strip() == "yes"


@contextlib.contextmanager
def operator_on_manager(
    multikueue: MultiKueueEnvironment, namespace: str, worker_clusters: Path | None
) -> Iterator[OperatorProcess]:
    workdir = Path(tempfile.mkdtemp(prefix="sd-mk-operator-"))
    # Worker pods in other clusters are not watched: the resync steps the search. Scaled down with
    # MultiKueue's workerLostTimeout (20 s here, 15 min by default, against a 60 s resync).
    extra: tuple[str, ...] = ("--resync-seconds", "3")
    extra += ("--worker-clusters", str(worker_clusters)) if worker_clusters else ()
    process = OperatorProcess(multikueue.manager.control_plane, namespace, workdir, extra_args=extra)
    process.start()
    try:
        yield process
    finally:
        process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


class Placements:
    """Where each worker pod of the namespace was launched (the kubelet's program hook: the event
    that a pod starts on a worker's node), and a gate per worker that holds them until opened."""

    def __init__(self, multikueue: MultiKueueEnvironment, namespace: str, directory: Path) -> None:
        self.multikueue, self.namespace, self.directory = multikueue, namespace, directory
        self.started: list[str] = []  # worker names, in launch order
        self._lock = threading.Lock()
        self._installed: list[tuple[Cluster, Callable[[dict[str, Any], list[str]], list[str] | None]]] = []

    def gate(self, worker: str) -> Path:
        return self.directory / f"gate-{worker}"

    def open(self, worker: str) -> None:
        self.gate(worker).touch()

    def __enter__(self) -> Placements:
        for name, worker in self.multikueue.workers.items():

            def program(pod: dict[str, Any], argv: list[str], name: str = name) -> list[str] | None:
                if pod_key(pod, self.namespace) is None:
                    return None
                with self._lock:
                    self.started.append(name)
                wait = f"while [ ! -e {self.gate(name)} ]; do sleep 0.1; done"
                return ["sh", "-c", f'{wait}; exec "$@"', "sh", *PROGRAM, *argv[1:]]

            worker.kubelet.programs.append(program)
            self._installed.append((worker, program))
        return self

    def __exit__(self, *_: object) -> None:
        for worker, program in self._installed:
            worker.kubelet.programs.remove(program)


def holding_results(cluster: Cluster, namespace: str) -> list[Any]:
    """The namespace's pods in `cluster` that still carry the results finalizer."""
    return [
        pod
        for pod in cluster.core.list_namespaced_pod(namespace).items
        if builders.RESULTS_FINALIZER in (pod.metadata.finalizers or [])
    ]


def release_everything(multikueue: MultiKueueEnvironment, namespace: str) -> None:
    """Drop the results finalizer of the namespace's pods in every reachable cluster, so the
    namespace can go (a lost worker's pods keep theirs: nothing reached them)."""
    for cluster in multikueue.clusters:
        if cluster.name in multikueue.stopped_workers:
            continue
        for pod in holding_results(cluster, namespace):
            kept = [f for f in pod.metadata.finalizers if f != builders.RESULTS_FINALIZER]
            cluster.core.patch_namespaced_pod(
                pod.metadata.name,
                namespace,
                {"metadata": {"finalizers": kept}},
                _content_type="application/merge-patch+json",
            )


def results(records: list[ArchiveRecord]) -> dict[str, tuple[Any, ...]]:
    found = {}
    for record in records:
        metrics = record.result.metrics
        assert metrics is not None, f"{record.result.candidate_id} failed: {record.result.reason}"
        found[record.result.candidate_id] = (metrics.gender_bias, metrics.ethnic_bias, metrics.quality)
    return found


@pytest.fixture
def crd(multikueue: MultiKueueEnvironment) -> None:
    plane = multikueue.manager.control_plane
    plane.install_crds(CRD_PATH)


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("crd")
def test_a_search_deleted_mid_generation_leaves_no_pod_held_in_any_cluster(
    multikueue: MultiKueueEnvironment, namespace: str, tmp_path: Path
) -> None:
    manager = multikueue.manager
    credentials = worker_credentials(multikueue, namespace, tmp_path / "worker-clusters")
    with (
        Placements(multikueue, namespace, tmp_path) as placements,
        operator_on_manager(multikueue, namespace, credentials),
    ):
        create_search(manager.api, namespace, "deleted", spec())
        wait_until(lambda: placements.started, 300, what="a worker pod to start in a worker cluster")
        worker = multikueue.workers[placements.started[0]]
        assert holding_results(worker, namespace), "the running worker pod should hold its results"
        manager.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "deleted")
        # Nothing will read those results now: the operator lets them go; MultiKueue removes the
        # worker's copy of the Job, and its pods go with it instead of waiting on the finalizer.
        wait_until(lambda: not worker.core.list_namespaced_pod(namespace).items, 120, what="the pods to go")


# After the test above: this one stops a worker, and the next namespace waits on its return.
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("crd")
def test_a_search_runs_in_worker_clusters_and_survives_losing_one(
    multikueue: MultiKueueEnvironment, namespace: str, tmp_path: Path
) -> None:
    manager = multikueue.manager
    credentials = worker_credentials(multikueue, namespace, tmp_path / "worker-clusters")
    # The operator's credentials in each worker: pods in the search's namespace, nothing more.
    rows = []
    for name, worker in multikueue.workers.items():
        for verb, resource, allowed in CAN_I:
            here = can_i(worker, namespace, verb, resource, namespace)
            elsewhere = can_i(worker, namespace, verb, resource, "kube-system")
            rows.append(
                f"{name}: {verb} {resource}: {namespace} {yes_no(here)}, kube-system {yes_no(elsewhere)}"
            )
            assert (here, elsewhere) == (allowed, False), rows[-1]
    print("\nkubectl auth can-i, as the results reader:\n" + "\n".join(rows))

    try:
        with (
            Placements(multikueue, namespace, tmp_path) as placements,
            operator_on_manager(multikueue, namespace, credentials) as operator,
        ):
            create_search(manager.api, namespace, "across", spec())
            # The first generation's pods start in one worker (held there by its gate): that
            # worker disappears, its pods still running.
            wait_until(lambda: placements.started, 300, what="a worker pod to start in a worker cluster")
            lost = placements.started[0]
            (other,) = [name for name in multikueue.workers if name != lost]
            placements.open(other)
            multikueue.stop_worker_api_server(lost)
            stopped = time.monotonic()
            wait_event(
                manager.api,
                namespace,
                lambda e: e.reason == CLUSTER_UNREACHABLE and lost in (e.message or ""),
                f"the {CLUSTER_UNREACHABLE} event naming {lost}",
                timeout=120,
            )
            seen = time.monotonic()
            status = wait_phase(manager.api, namespace, "across", operator)["status"]
            print(
                f"{lost} stopped: {CLUSTER_UNREACHABLE} posted {seen - stopped:.1f} s later; the search "
                f"Succeeded {time.monotonic() - stopped:.1f} s after the loss, in {other}"
            )
            assert other in placements.started
        assert status["evaluations"]["failed"] == 0
        across = archive_records(manager.api, namespace, "across")
        told = [record.result.candidate_id for record in across]
        assert len(told) == len(set(told)), "a candidate was counted twice"
        # Every pod the operator read in a reachable cluster has its results released.
        assert [pod.metadata.name for pod in holding_results(multikueue.workers[other], namespace)] == []

        # The same spec in one cluster (the remaining worker, with its own Kueue), no MultiKueue.
        single = multikueue.workers[other]
        single.control_plane.install_crds(CRD_PATH)
        with Placements(multikueue, namespace, tmp_path) as placements:
            placements.open(other)
            workdir = Path(tempfile.mkdtemp(prefix="sd-mk-single-"))
            process = OperatorProcess(single.control_plane, namespace, workdir)
            process.start()
            try:
                create_search(single.api, namespace, "one-cluster", spec())
                wait_phase(single.api, namespace, "one-cluster", process)
            finally:
                process.kill()
                shutil.rmtree(workdir, ignore_errors=True)
        alone = archive_records(single.api, namespace, "one-cluster")
        assert results(across) == results(alone)
        front = {p["candidateId"] for p in get_search(manager.api, namespace, "across")["status"]["front"]}
        assert front == {
            p["candidateId"] for p in get_search(single.api, namespace, "one-cluster")["status"]["front"]
        }
    finally:
        release_everything(multikueue, namespace)
