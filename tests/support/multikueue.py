"""MultiKueue on loopback: a manager cluster and worker clusters, each a control plane of its own
(tests/support/controlplane.py) with its own Kueue (tests/support/kueue.py), all on this machine.

- The manager runs Kueue with a `multiKueue` configuration (a short `workerLostTimeout`, a
  parameter) and has no node: Jobs created there are dispatched, never run there. It holds, per
  worker, a Secret in kueue-system whose `kubeconfig` key is an admin kubeconfig of that worker's
  API server (certificates inline: Kueue refuses file paths), a MultiKueueCluster naming the
  Secret, one MultiKueueConfig listing every worker, an AdmissionCheck of the MultiKueue controller
  with that config as parameters, and the ClusterQueue `CLUSTER_QUEUE` carrying that check.
- Each worker has one test kubelet (a fake GPU node whose pods run as local processes, named
  `<worker>-node`), a ResourceFlavor `FLAVOR` and a ClusterQueue `CLUSTER_QUEUE` with quota for
  cpu, memory and nvidia.com/gpu; optionally Kueue's `waitForPodsReady` with a short timeout.
- `MultiKueueEnvironment.prepare_namespace(ns)` makes the namespace and the LocalQueue of the same
  name in every cluster (MultiKueue creates the remote objects under the manager's namespace and
  queue name); `stop_worker_api_server(name)` makes a worker disappear (its API server killed; its
  pods' processes go on running, as a lost cluster's would), `restart_worker_api_server(name)`
  brings it back.

    with started_multikueue("sd-multikueue-", worker_lost_timeout_s=20) as env:
        env.prepare_namespace("team-a")
        env.manager.batch.create_namespaced_job("team-a", job)  # labelled kueue.x-k8s.io/queue-name: team
        workload = env.manager.workload_of_job("team-a", job_name)  # status.clusterName: the worker
        pods = env.workers[workload["status"]["clusterName"]].pods_of_job("team-a", job_name)

Each `Cluster` has `api`, `core`, `batch`, `custom` clients, `control_plane`, `kueue` and, for a
worker, `kubelet` (its `programs` substitute what pods run) and `node_name`.

The clusters start concurrently (threads: the time is mostly waiting for API servers and Kueue);
`started_multikueue` prints how long each took. Teardown stops every process and checks that
none is left.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.support.controlplane import Binaries, ControlPlane, locate_binaries
from tests.support.environment import KEEP_ENV, kubelet_pod_env, stop_kubelet
from tests.support.kubelet import TestKubelet
from tests.support.kueue import KUEUE_NAMESPACE, Kueue
from tests.support.processes import wait_until

KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
KUEUE_API = f"{KUEUE_GROUP}/{KUEUE_VERSION}"
# The AdmissionCheck's controllerName, and the managedBy of a Job that MultiKueue dispatches.
MULTIKUEUE_CONTROLLER = "kueue.x-k8s.io/multikueue"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
FLAVOR = "default"
CLUSTER_QUEUE = "gpus"  # in the manager (with the MultiKueue check) and in every worker
ADMISSION_CHECK = "multikueue"
MULTIKUEUE_CONFIG = "multikueue"
LOCAL_QUEUE = "team"
WORKER_NAMES = ("worker-a", "worker-b")
# A worker's quota is its node's capacity (the test kubelet's default); the manager's, all workers'.
WORKER_QUOTA = {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"}
MANAGER_QUOTA = {"cpu": "32", "memory": "128Gi", "nvidia.com/gpu": "8"}
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class WaitForPodsReady:
    """Kueue's `waitForPodsReady` for the workers: a Workload whose pods are not all ready
    `timeout_s` after admission is evicted and requeued after a backoff of about
    `backoff_base_s` * 2^(n-1) (at most `backoff_max_s`)."""

    timeout_s: int = 20
    backoff_base_s: int = 1
    backoff_max_s: int = 10
    backoff_limit_count: int | None = None
    block_admission: bool = False

    def configuration(self) -> dict[str, Any]:
        strategy: dict[str, Any] = {
            "timestamp": "Eviction",
            "backoffBaseSeconds": self.backoff_base_s,
            "backoffMaxSeconds": self.backoff_max_s,
        }
        if self.backoff_limit_count is not None:
            strategy["backoffLimitCount"] = self.backoff_limit_count
        return {
            "waitForPodsReady": {
                "timeout": f"{self.timeout_s}s",
                "blockAdmission": self.block_admission,
                "requeuingStrategy": strategy,
            }
        }


class Cluster:
    """One cluster: a control plane, its Kueue, an admin client and, for a worker, a test kubelet.
    Start with `start()`, always finish with `stop()`."""

    def __init__(
        self,
        name: str,
        binaries: Binaries,
        workdir: Path,
        kueue_configuration: Mapping[str, Any],
        node: bool,
        first_pod_ip: int = 0,
    ) -> None:
        self.name, self.workdir = name, workdir
        self.control_plane = ControlPlane(binaries, workdir / "control-plane")
        self.kueue = Kueue(
            self.control_plane,
            binaries.kubectl.parent,
            workdir / "kueue",
            configuration_overrides=kueue_configuration,
        )
        self._node, self._first_pod_ip = node, first_pod_ip
        self._api: client.ApiClient | None = None
        self._kubelet: TestKubelet | None = None
        self.startup_s = 0.0

    @property
    def api(self) -> client.ApiClient:
        assert self._api is not None, f"{self.name} is not started"
        return self._api

    @property
    def kubelet(self) -> TestKubelet:
        assert self._kubelet is not None, f"{self.name} has no test kubelet"
        return self._kubelet

    @property
    def node_name(self) -> str:
        return f"{self.name}-node"

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def start(self) -> None:
        started = time.monotonic()
        self.control_plane.start()
        self._api = config.new_client_from_config(config_file=str(self.control_plane.kubeconfig))
        self.kueue.start()
        if self._node:
            kubelet = TestKubelet(
                self.api,
                self.workdir / "kubelet",
                node_name=self.node_name,
                base_env=kubelet_pod_env(),
                first_pod_ip=self._first_pod_ip,
            )
            kubelet.start()
            self._kubelet = kubelet
            self.apply(flavor_manifest(), cluster_queue_manifest(WORKER_QUOTA))
            self.wait_active("clusterqueues", CLUSTER_QUEUE)
        self.startup_s = time.monotonic() - started

    def stop(self) -> None:
        """Stop the kubelet's pods, Kueue and the control plane; raises the first failure after
        trying every step."""
        steps: list[Callable[[], None]] = []
        if self._kubelet is not None:
            kubelet, self._kubelet = self._kubelet, None
            steps.append(lambda: stop_kubelet(kubelet))
        steps.append(self.kueue.stop)
        if self._api is not None:
            api, self._api = self._api, None
            steps.append(api.close)
        steps.append(self.control_plane.stop)
        _run_all(steps)

    def apply(self, *documents: dict[str, Any]) -> None:
        result = self.control_plane.kubectl(
            "apply", "-f", "-", input_text=yaml.safe_dump_all(documents), check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: kubectl apply failed: {result.stderr.strip()}")

    def kueue_object(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        if namespace is None:
            found = self.custom.get_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, plural, name)
        else:
            found = self.custom.get_namespaced_custom_object(
                KUEUE_GROUP, KUEUE_VERSION, namespace, plural, name
            )
        return cast(dict[str, Any], found)

    def workloads(self, namespace: str) -> list[dict[str, Any]]:
        listing = cast(
            dict[str, Any],
            self.custom.list_namespaced_custom_object(KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads"),
        )
        return list(listing.get("items") or [])

    def workload_of_job(self, namespace: str, job: str) -> dict[str, Any] | None:
        """The Workload Kueue made for the Job named `job` (its owner), or None."""
        for workload in self.workloads(namespace):
            owners = workload["metadata"].get("ownerReferences") or []
            if any(o["kind"] == "Job" and o["name"] == job for o in owners):
                return workload
        return None

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.batch.read_namespaced_job(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], self.api.sanitize_for_serialization(found))

    def pods_of_job(self, namespace: str, job: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job}")
        return [cast(dict[str, Any], self.api.sanitize_for_serialization(p)) for p in pods.items]

    def wait_active(
        self, plural: str, name: str, namespace: str | None = None, reason: str | None = None
    ) -> None:
        """Until the object's `Active` condition is True (and has `reason`, if given)."""

        def active() -> bool:
            found = condition(self.kueue_object(plural, name, namespace), "Active")
            return bool(
                found and found["status"] == "True" and (reason is None or found.get("reason") == reason)
            )

        wait_until(active, READY_TIMEOUT_S, interval=0.3, what=f"{self.name}: {plural}/{name} Active")


@dataclass
class MultiKueueEnvironment:
    manager: Cluster
    workers: dict[str, Cluster]
    worker_lost_timeout_s: float
    origin: str
    workdir: Path
    startup_s: float = 0.0
    stopped_workers: set[str] = field(default_factory=set)
    _deletions: dict[str, set[str]] = field(default_factory=dict)  # worker: namespaces to delete

    @property
    def clusters(self) -> list[Cluster]:
        return [self.manager, *self.workers.values()]

    def prepare_namespace(
        self, namespace: str, local_queue: str = LOCAL_QUEUE, labels: Mapping[str, str] | None = None
    ) -> None:
        """The namespace (with `labels`) and a LocalQueue `local_queue` (to `CLUSTER_QUEUE`) in every
        cluster, the LocalQueues Active (so the manager's Job webhook sees the MultiKueue check
        behind its queue) and each worker's default ServiceAccount made."""
        for cluster in self.clusters:
            try:
                cluster.core.create_namespace({"metadata": {"name": namespace, "labels": dict(labels or {})}})
            except ApiException as error:
                if error.status != 409:
                    raise
            cluster.apply(local_queue_manifest(namespace, local_queue))
        for cluster in self.clusters:
            cluster.wait_active("localqueues", local_queue, namespace)
        for worker in self.workers.values():
            wait_until(
                functools.partial(worker.core.read_namespaced_service_account, "default", namespace),
                60,
                what=f"{worker.name}: the default ServiceAccount of {namespace}",
            )

    def delete_namespace(self, namespace: str) -> None:
        """Delete it in every cluster (not waiting for the deletion); in a stopped worker, once its
        API server is restarted."""
        for cluster in self.clusters:
            if cluster.name in self.stopped_workers:
                self._deletions.setdefault(cluster.name, set()).add(namespace)
                continue
            with contextlib.suppress(ApiException):
                cluster.core.delete_namespace(namespace)

    def worker_of_node(self, node_name: str) -> Cluster:
        return next(w for w in self.workers.values() if w.node_name == node_name)

    def multikueue_cluster(self, name: str) -> dict[str, Any]:
        return self.manager.kueue_object("multikueueclusters", name)

    def stop_worker_api_server(self, name: str) -> None:
        """The worker disappears: its API server is killed. Its Kueue, controllers and the pods'
        processes on its test kubelet go on running."""
        self.workers[name].control_plane.stop_api_server()
        self.stopped_workers.add(name)

    def restart_worker_api_server(self, name: str, wait_active: bool = True) -> None:
        """Bring a stopped worker's API server back; with `wait_active`, until the manager's
        MultiKueueCluster for it is Active again. Kueue reconnects with a backoff (5 s, doubling
        per failed try, at most 320 s); a change of the cluster's Secret makes it try at once, so
        the Secret gets a new annotation."""
        worker = self.workers[name]
        worker.control_plane.restart_api_server()
        self.stopped_workers.discard(name)
        for namespace in sorted(self._deletions.pop(name, set())):
            with contextlib.suppress(ApiException):
                worker.core.delete_namespace(namespace)
        self.manager.core.patch_namespaced_secret(
            secret_name(name),
            KUEUE_NAMESPACE,
            {"metadata": {"annotations": {"sustaindiffusion.io/restarted": str(time.time())}}},
        )
        if wait_active:
            self.manager.wait_active("multikueueclusters", name)

    def configure_manager(self) -> None:
        """The Secrets, MultiKueueClusters, MultiKueueConfig, AdmissionCheck and ClusterQueue of the
        manager; waits until every one is Active."""
        documents: list[dict[str, Any]] = []
        for name, worker in self.workers.items():
            kubeconfig = inline_kubeconfig(worker.control_plane, name)
            documents.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": secret_name(name), "namespace": KUEUE_NAMESPACE},
                    "data": {"kubeconfig": base64.b64encode(kubeconfig.encode()).decode()},
                }
            )
            documents.append(
                {
                    "apiVersion": KUEUE_API,
                    "kind": "MultiKueueCluster",
                    "metadata": {"name": name},
                    "spec": {
                        "clusterSource": {
                            "kubeConfig": {"locationType": "Secret", "location": secret_name(name)}
                        }
                    },
                }
            )
        documents += [
            {
                "apiVersion": KUEUE_API,
                "kind": "MultiKueueConfig",
                "metadata": {"name": MULTIKUEUE_CONFIG},
                "spec": {"clusters": list(self.workers)},
            },
            {
                "apiVersion": KUEUE_API,
                "kind": "AdmissionCheck",
                "metadata": {"name": ADMISSION_CHECK},
                "spec": {
                    "controllerName": MULTIKUEUE_CONTROLLER,
                    "parameters": {
                        "apiGroup": KUEUE_GROUP,
                        "kind": "MultiKueueConfig",
                        "name": MULTIKUEUE_CONFIG,
                    },
                },
            },
            flavor_manifest(),
            cluster_queue_manifest(MANAGER_QUOTA, admission_check=ADMISSION_CHECK),
        ]
        self.manager.apply(*documents)
        for name in self.workers:
            self.manager.wait_active("multikueueclusters", name)
        self.manager.wait_active("admissionchecks", ADMISSION_CHECK, reason="Active")
        self.manager.wait_active("clusterqueues", CLUSTER_QUEUE)


def secret_name(worker: str) -> str:
    return f"multikueue-{worker}"


def inline_kubeconfig(plane: ControlPlane, name: str) -> str:
    """An admin kubeconfig of `plane` with its certificates inline (MultiKueue refuses paths)."""
    certs = plane.certs
    assert certs is not None

    def data(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": name,
                    "cluster": {"server": plane.server, "certificate-authority-data": data(certs.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": data(certs.admin_cert),
                        "client-key-data": data(certs.admin_key),
                    },
                }
            ],
            "contexts": [{"name": name, "context": {"cluster": name, "user": "admin"}}],
            "current-context": name,
        }
    )


def flavor_manifest() -> dict[str, Any]:
    return {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}}


def cluster_queue_manifest(quota: Mapping[str, str], admission_check: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "namespaceSelector": {},
        "resourceGroups": [
            {
                "coveredResources": list(quota),
                "flavors": [
                    {
                        "name": FLAVOR,
                        "resources": [{"name": name, "nominalQuota": value} for name, value in quota.items()],
                    }
                ],
            }
        ],
    }
    if admission_check is not None:
        spec["admissionChecksStrategy"] = {"admissionChecks": [{"name": admission_check}]}
    return {
        "apiVersion": KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": {"name": CLUSTER_QUEUE},
        "spec": spec,
    }


def local_queue_manifest(namespace: str, name: str = LOCAL_QUEUE) -> dict[str, Any]:
    return {
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterQueue": CLUSTER_QUEUE},
    }


def condition(obj: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The status condition of type `kind` of a Kubernetes object (a dict), or None."""
    for found in ((obj or {}).get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return cast(dict[str, Any], found)
    return None


def admission_check_state(
    workload: Mapping[str, Any] | None, name: str = ADMISSION_CHECK
) -> dict[str, Any] | None:
    """The Workload's state of the admission check `name` (state, message, lastTransitionTime)."""
    for state in ((workload or {}).get("status") or {}).get("admissionChecks") or []:
        if state.get("name") == name:
            return cast(dict[str, Any], state)
    return None


def _run_all(steps: Sequence[Callable[[], None]]) -> None:
    """Run every step; raise the first failure afterwards."""
    first: BaseException | None = None
    for step in steps:
        try:
            step()
        except BaseException as error:  # every step runs; the first failure is raised
            first = first or error
    if first is not None:
        raise first


def _concurrently(pool: concurrent.futures.ThreadPoolExecutor, steps: Sequence[Callable[[], None]]) -> None:
    """Run the steps on `pool`, wait for all of them and raise the first failure.

    The pool must outlive every process its threads start: a test process dies with its parent
    thread, not its parent process (processes.py starts them with the parent-death signal, which
    Linux sends when the thread that forked them exits)."""
    futures = [pool.submit(step) for step in steps]
    concurrent.futures.wait(futures)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


@contextlib.contextmanager
def started_multikueue(
    prefix: str = "sd-multikueue-",
    worker_names: Sequence[str] = WORKER_NAMES,
    worker_lost_timeout_s: int = 20,
    wait_for_pods_ready: WaitForPodsReady | None = None,
    gc_interval_s: int = 10,
    origin: str = "multikueue",
) -> Iterator[MultiKueueEnvironment]:
    """A manager and `worker_names` workers, configured and Active; everything stopped afterwards.

    `worker_lost_timeout_s`: how long the manager keeps a Workload on a worker it lost before it
    dispatches it again (counted from the worker's reservation, see tests/e2e/multikueue).
    `wait_for_pods_ready`: the workers' Kueue evicts Workloads whose pods are not ready in time.
    `gc_interval_s`, `origin`: the manager's garbage collection of orphaned remote objects and the
    label value (`kueue.x-k8s.io/multikueue-origin`) it marks them with."""
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    binaries = locate_binaries()
    multikueue = {
        "multiKueue": {
            "gcInterval": f"{gc_interval_s}s",
            "origin": origin,
            "workerLostTimeout": f"{worker_lost_timeout_s}s",
        }
    }
    manager = Cluster("manager", binaries, workdir / "manager", multikueue, node=False)
    workers = {
        name: Cluster(
            name,
            binaries,
            workdir / name,
            wait_for_pods_ready.configuration() if wait_for_pods_ready else {},
            node=True,
            first_pod_ip=10_000 * (index + 1),  # slots.pod_ip: 127.<slot>.40.x, .80.x, ...
        )
        for index, name in enumerate(worker_names)
    }
    environment = MultiKueueEnvironment(manager, workers, worker_lost_timeout_s, origin, workdir)
    # Its threads start the clusters' processes: it lives until they are stopped (_concurrently).
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(environment.clusters))
    try:
        _concurrently(pool, [cluster.start for cluster in environment.clusters])
        clusters_up = time.monotonic()
        environment.configure_manager()
        environment.startup_s = time.monotonic() - started
        each = ", ".join(f"{c.name} {c.startup_s:.1f} s" for c in environment.clusters)
        print(
            f"multikueue: started in {environment.startup_s:.1f} s "
            f"(clusters concurrently: {each}; MultiKueue Active "
            f"{time.monotonic() - clusters_up:.1f} s later)"
        )
        yield environment
    finally:
        stopping = time.monotonic()
        try:
            _concurrently(
                pool, [functools.partial(_stop_logged, cluster) for cluster in environment.clusters]
            )
        finally:
            pool.shutdown()
            print(f"multikueue: stopped in {time.monotonic() - stopping:.1f} s")
            if not os.environ.get(KEEP_ENV):
                shutil.rmtree(workdir, ignore_errors=True)


def _stop_logged(cluster: Cluster) -> None:
    try:
        cluster.stop()
    except BaseException:
        print(f"multikueue: stopping {cluster.name} failed; Kueue's log tail:\n{cluster.kueue.log_tail()}")
        raise
