"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, built from Go modules by `hack/build-binaries.sh`.

Everything listens on 127.0.0.1 on free ports and lives in one temporary directory (a plane for a
real node's pods serves the API on every address: `pod_reachable_ips`). `stop()` terminates
every process group and checks that nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.certs import ControlPlaneCerts, generate_certs
from tests.support.processes import (
    ManagedProcess,
    group_is_empty,
    http_ok,
    wait_until,
    wait_while_running,
)
from tests.support.slots import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-binaries.sh"
BIN_DIR_ENV = "SUSTAINDIFFUSION_K8S_BIN_DIR"

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# The `kubernetes` Service's ClusterIP (the first of the range): in-cluster clients connect to it.
KUBERNETES_SERVICE_IP = "10.96.0.1"

# The controllers the tests rely on. The node-lifecycle controller lifts the not-ready taint that
# admission puts on a new node; it stays content because the test kubelet renews the node's Lease.
CONTROLLERS = (
    "node-lifecycle-controller",
    "job-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "ttl-after-finished-controller",
    "replicaset-controller",
    "deployment-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
    "resourcequota-controller",  # quota usage, which quota admission needs (a shared cluster has quotas)
    "disruption-controller",  # evictions (the PodDisruptionBudget bookkeeping the eviction API reads)
    "validatingadmissionpolicy-status-controller",  # type-checks admission policies against the CRD
    "persistentvolume-binder-controller",  # binds the weights-cache claims of the container node's pods
)

READY_TIMEOUT_S = float(os.environ.get("SUSTAINDIFFUSION_CONTROL_PLANE_TIMEOUT", "180"))


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    helm: Path

    @classmethod
    def from_dir(cls, directory: Path) -> Binaries:
        binaries = cls(
            etcd=directory / "etcd",
            kube_apiserver=directory / "kube-apiserver",
            kube_controller_manager=directory / "kube-controller-manager",
            kube_scheduler=directory / "kube-scheduler",
            kubectl=directory / "kubectl",
            helm=directory / "helm",
        )
        # helm is built after the control plane (make's bin-helm), and only the chart's tests run
        # it: they check it themselves (tests/support/chart.py).
        required = [path for name, path in vars(binaries).items() if name != "helm"]
        missing = [str(p) for p in required if not os.access(p, os.X_OK)]
        if missing:
            raise FileNotFoundError(
                f"control-plane binaries missing: {', '.join(missing)}; run hack/build-binaries.sh"
            )
        return binaries


def locate_binaries() -> Binaries:
    """The binaries named by $SUSTAINDIFFUSION_K8S_BIN_DIR, else built (or reused) by the build script."""
    configured = os.environ.get(BIN_DIR_ENV)
    if configured:
        return Binaries.from_dir(Path(configured))
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    return Binaries.from_dir(Path(result.stdout.strip().splitlines()[-1]))


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; the message ends with what it printed on stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nkubectl stderr: {(self.stderr or '').strip() or '(empty)'}"


class ControlPlane:
    """Start with `start()`, always finish with `stop()` (it is safe to call twice)."""

    def __init__(self, binaries: Binaries, workdir: Path, pod_reachable_ips: tuple[str, ...] = ()) -> None:
        self.binaries = binaries
        # Addresses of this machine that pods in containers reach the API server at (the serving
        # certificate names them and the `kubernetes` Service's IP); empty: loopback only.
        self.pod_reachable_ips = pod_reachable_ips
        self.workdir = workdir
        self.processes: list[ManagedProcess] = []
        self.certs: ControlPlaneCerts | None = None
        self.api_port = 0
        self.kubeconfig = workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        extra_ips = (*self.pod_reachable_ips, KUBERNETES_SERVICE_IP) if self.pod_reachable_ips else ()
        self.certs = certs = generate_certs(self.workdir / "pki", extra_ips)
        etcd_client, etcd_peer = free_port(), free_port()
        etcd = self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=test=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
        )
        self._wait_http(etcd, f"http://127.0.0.1:{etcd_client}/health", None)

        self.api_port = free_port()
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                f"--bind-address={'0.0.0.0' if self.pod_reachable_ips else '127.0.0.1'}",
                f"--advertise-address={self.pod_reachable_ips[0] if self.pod_reachable_ips else '127.0.0.1'}",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={certs.serving_cert}",
                f"--tls-private-key-file={certs.serving_key}",
                f"--client-ca-file={certs.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={certs.service_account_pub}",
                f"--service-account-signing-key-file={certs.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--v=1",
                # A real node's name resolves nowhere: its pods' logs are read at its InternalIP.
                *(
                    ["--kubelet-preferred-address-types=InternalIP,Hostname"]
                    if self.pod_reachable_ips
                    else []
                ),
            ],
        )
        self._write_kubeconfig()
        self._wait_http(apiserver, f"{self.server}/readyz", self._admin_ssl_context())

        controller_manager_port = free_port()
        controller_manager = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={controller_manager_port}",
                f"--root-ca-file={certs.ca_cert}",
                f"--service-account-private-key-file={certs.service_account_key}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=false",
                # Fast garbage collection and Job bookkeeping keep the tests short.
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        scheduler_port = free_port()
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(self.binaries.kube_scheduler),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={scheduler_port}",
                "--v=1",
            ],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        self._wait_http(controller_manager, f"https://127.0.0.1:{controller_manager_port}/healthz", insecure)
        self._wait_http(scheduler, f"https://127.0.0.1:{scheduler_port}/healthz", insecure)

    def stop(self) -> None:
        """Stop every process in reverse start order and check that no process group survived."""
        leftovers = []
        for process in reversed(self.processes):
            process.stop()
            if not group_is_empty(process.pid):
                leftovers.append(process.name)
        self.processes.clear()
        if leftovers:
            raise RuntimeError(f"control-plane processes still running after stop: {leftovers}")

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop_api_server(self) -> None:
        """Kill the API server alone (SIGKILL, no graceful shutdown): the cluster disappears for its
        clients while etcd, the controllers and whatever runs on its nodes go on.
        `restart_api_server()` brings it back on the same port with the same etcd."""
        process = self._process("kube-apiserver")
        process.signal_group(signal.SIGKILL)
        process.stop(grace_seconds=0)
        if not group_is_empty(process.pid):
            raise RuntimeError("kube-apiserver still running after stop")

    def restart_api_server(self) -> None:
        """Start the API server that `stop_api_server()` stopped, with its arguments, and wait until
        it is ready."""
        old = self._process("kube-apiserver")
        if old.alive():
            raise RuntimeError("kube-apiserver is running")
        process = ManagedProcess(old.name, old.argv, old.log_path)
        self.processes[self.processes.index(old)] = process
        self._wait_http(process, f"{self.server}/readyz", self._admin_ssl_context())

    def _process(self, name: str) -> ManagedProcess:
        return next(p for p in self.processes if p.name == name)

    def kubectl(
        self, *args: str, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built with the control plane against it. A failure raises `KubectlError`,
        whose message carries kubectl's stderr (a bare CalledProcessError's would not)."""
        result = subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            check=False,
            capture_output=True,
            text=True,
            input=input_text,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
        return result

    def install_crds(self, path: Path) -> None:
        """Apply the CRDs in `path` (server-side) and wait until each is Established."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        names = [
            document["metadata"]["name"]
            for document in yaml.safe_load_all(path.read_text())
            if document and document.get("kind") == "CustomResourceDefinition"
        ]
        self.wait_crds_established(*names)

    def wait_crds_established(self, *names: str, timeout: float = 60) -> None:
        """Until the named CRDs (every CRD when none is named) exist and are Established. Polled
        rather than `kubectl wait --for=condition=Established`, which fails at once on a CRD whose
        status the API server has not filled in yet ("accessor error: <nil>")."""
        pending: list[str] = []

        def established() -> bool:
            listed = json.loads(self.kubectl("get", "crd", "-o", "json").stdout)["items"]
            ready = {
                crd["metadata"]["name"]
                for crd in listed
                if any(
                    condition.get("type") == "Established" and condition.get("status") == "True"
                    for condition in (crd.get("status") or {}).get("conditions") or []
                )
            }
            wanted = set(names) or {crd["metadata"]["name"] for crd in listed}
            pending[:] = sorted(wanted - ready)
            return not pending

        try:
            wait_until(established, timeout, interval=0.2, what="the CRDs to be Established")
        except TimeoutError as error:
            raise TimeoutError(f"{error}; not Established: {', '.join(pending) or 'none listed'}") from None

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.workdir / f"{name}.log")
        self.processes.append(process)
        return process

    def _admin_ssl_context(self) -> ssl.SSLContext:
        assert self.certs is not None
        context = ssl.create_default_context(cafile=str(self.certs.ca_cert))
        context.load_cert_chain(str(self.certs.admin_cert), str(self.certs.admin_key))
        return context

    def _wait_http(self, process: ManagedProcess, url: str, context: ssl.SSLContext | None) -> None:
        wait_while_running(
            process, lambda: http_ok(url, context), READY_TIMEOUT_S, what=f"{process.name} at {url}"
        )

    def _write_kubeconfig(self) -> None:
        assert self.certs is not None
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.certs.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(self.certs.admin_cert),
                        "client-key": str(self.certs.admin_key),
                    },
                }
            ],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
