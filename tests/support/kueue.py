"""Kueue's real controller manager against the test control plane.

Built from its Go module by `hack/build-binaries.sh` (version in `hack/versions.env`), with the CRDs
and webhook manifests of the same module version. How it is wired on loopback (the notes in
`tests/e2e/KUEUE.md` say why):

- Kueue serves its webhooks (mutation of Jobs, validation and defaulting of its own objects, CRD
  version conversion) on 127.0.0.1 with the control plane's serving certificate, whose SANs
  include 127.0.0.1. Kueue's internal certificate management is off: it makes certificates for a
  Service name that a loopback API server cannot resolve.
- The webhook configurations and the CRDs' conversion webhooks name that loopback URL instead of
  the Service, with the control plane's CA as their caBundle. Only the webhooks of the frameworks
  enabled here (batch/Job) and of Kueue's own kinds are registered: a pod or Deployment webhook
  whose server is not serving that kind would refuse every pod of the cluster.
- With internal certificates off, Kueue reads its metrics certificate from a fixed path
  (/etc/kueue/metrics/certs); the process runs in a private mount namespace (util-linux
  `unshare`, root only, as the test kubelet's service-account pods do) where the certificate
  folder is bind-mounted there.
- Leader election is off (one replica) and the on-demand visibility server is disabled (its
  aggregated API would need an APIService and a front proxy).
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.support.controlplane import READY_TIMEOUT_S, ControlPlane
from tests.support.processes import (
    ManagedProcess,
    group_is_empty,
    http_ok,
    wait_until,
    wait_while_running,
)
from tests.support.slots import free_port

KUEUE_NAMESPACE = "kueue-system"
METRICS_CERT_PATH = "/etc/kueue/metrics/certs"  # fixed in Kueue's main.go when certificates are external
# Kueue's own kinds and the batch/Job integration; every other framework stays unregistered.
WEBHOOK_PATH_PARTS = ("-batch-v1-job", "-kueue-x-k8s-io-")
CONVERTED_CRDS = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in: nested mappings merge key by key, anything else replaces."""
    result = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


class Kueue:
    """Start with `start()`, always finish with `stop()`.

    `configuration_overrides` is merged into Kueue's Configuration (e.g. `multiKueue`,
    `waitForPodsReady`); `feature_gates` are added to the command line's `--feature-gates` (Kueue
    refuses its Configuration's `featureGates` beside that flag)."""

    def __init__(
        self,
        control_plane: ControlPlane,
        bin_dir: Path,
        workdir: Path,
        configuration_overrides: Mapping[str, Any] | None = None,
        feature_gates: Mapping[str, bool] | None = None,
    ) -> None:
        self.control_plane, self.workdir = control_plane, workdir
        self.configuration_overrides = dict(configuration_overrides or {})
        self.feature_gates = {"VisibilityOnDemand": False, **(feature_gates or {})}
        # Beside the control-plane binaries, as hack/build-binaries.sh links them.
        self.binary, self.manifests = bin_dir / "kueue", bin_dir / "kueue-manifests"
        self.process: ManagedProcess | None = None
        self.webhook_port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.webhook_port}"

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        certs = self.control_plane.certs
        assert certs is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert_dir = self.workdir / "certs"
        cert_dir.mkdir(exist_ok=True)
        shutil.copy(certs.serving_cert, cert_dir / "tls.crt")
        shutil.copy(certs.serving_key, cert_dir / "tls.key")
        ca_bundle = base64.b64encode(certs.ca_cert.read_bytes()).decode()
        self.webhook_port, health_port = free_port(), free_port()
        self.control_plane.kubectl("create", "namespace", KUEUE_NAMESPACE)
        crds = self._crds(ca_bundle)
        self._apply(crds)
        self._wait_established(crds)
        config = self.workdir / "kueue-config.yaml"
        config.write_text(yaml.safe_dump(self._configuration(cert_dir, health_port)))
        unshare = shutil.which("unshare")
        if unshare is None:
            raise RuntimeError(
                "Kueue's metrics certificate needs util-linux unshare (root) for its fixed path"
            )
        mount = f'mkdir -p {METRICS_CERT_PATH} && mount --bind "{cert_dir}" {METRICS_CERT_PATH}'
        gates = ",".join(f"{name}={str(on).lower()}" for name, on in self.feature_gates.items())
        argv = [
            unshare, "--mount", "--propagation", "private", "sh", "-c", mount + ' && exec "$@"', "sh",
            str(self.binary), f"--config={config}", f"--feature-gates={gates}",
            f"--kubeconfig={self.control_plane.kubeconfig}", "--zap-log-level=2",
        ]  # fmt: skip
        self.process = ManagedProcess("kueue", argv, self.workdir / "kueue.log")
        self._wait_ready(health_port)
        self._apply(self._webhook_configurations(ca_bundle))
        self._wait_webhooks()

    def stop(self) -> None:
        if self.process is not None:
            process, self.process = self.process, None
            process.stop()
            if not group_is_empty(process.pid):
                raise RuntimeError("kueue still running after stop")

    def log_tail(self) -> str:
        return self.process.log_tail() if self.process else ""

    # ------------------------------------------------------------------ manifests

    def _configuration(self, cert_dir: Path, health_port: int) -> dict[str, Any]:
        return merged(self._base_configuration(cert_dir, health_port), self.configuration_overrides)

    def _base_configuration(self, cert_dir: Path, health_port: int) -> dict[str, Any]:
        return {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": KUEUE_NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
            "metrics": {"bindAddress": f"127.0.0.1:{free_port()}"},
            "webhook": {"port": self.webhook_port, "host": "127.0.0.1", "certDir": str(cert_dir)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "integrations": {"frameworks": ["batch/job"]},
            "clientConnection": {"qps": 50, "burst": 100},
        }

    def _crds(self, ca_bundle: str) -> list[dict[str, Any]]:
        crds = []
        for path in sorted((self.manifests / "crds").glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            if crd["spec"]["names"]["plural"] in CONVERTED_CRDS:
                crd["spec"]["conversion"] = {
                    "strategy": "Webhook",
                    "webhook": {
                        "clientConfig": {"url": f"{self.url}/convert", "caBundle": ca_bundle},
                        "conversionReviewVersions": ["v1"],
                    },
                }
            crds.append(crd)
        return crds

    def _webhook_configurations(self, ca_bundle: str) -> list[dict[str, Any]]:
        configurations = []
        for document in yaml.safe_load_all((self.manifests / "webhooks.yaml").read_text()):
            if not document:
                continue
            kept = []
            for webhook in document.get("webhooks") or []:
                path = webhook["clientConfig"]["service"]["path"]
                if any(part in path for part in WEBHOOK_PATH_PARTS):
                    webhook["clientConfig"] = {"url": f"{self.url}{path}", "caBundle": ca_bundle}
                    kept.append(webhook)
            document["metadata"] = {"name": f"kueue-{document['metadata']['name']}"}
            document["webhooks"] = kept
            configurations.append(document)
        return configurations

    def _apply(self, documents: list[dict[str, Any]]) -> None:
        path = self.workdir / "apply.yaml"
        path.write_text(yaml.safe_dump_all(documents))
        self.control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))

    # ------------------------------------------------------------------ readiness

    def _wait_established(self, crds: list[dict[str, Any]]) -> None:
        """Until the CRDs are Established and discovery lists every served version of them: Kueue
        reads discovery once at start and exits ("no matches for kind") on a kind it lacks, which
        can lag behind Established when the machine is busy."""
        self.control_plane.wait_crds_established(*(crd["metadata"]["name"] for crd in crds))
        served: dict[str, set[str]] = {}
        for crd in crds:
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    group_version = f"{crd['spec']['group']}/{version['name']}"
                    served.setdefault(group_version, set()).add(crd["spec"]["names"]["plural"])

        def discovered() -> bool:
            for group_version, plurals in served.items():
                result = self.control_plane.kubectl("get", "--raw", f"/apis/{group_version}", check=False)
                if result.returncode != 0:
                    return False
                listed = {resource["name"] for resource in json.loads(result.stdout).get("resources") or []}
                if not plurals <= listed:
                    return False
            return True

        wait_until(discovered, 60, interval=0.5, what="discovery to list Kueue's kinds")

    def _wait_ready(self, health_port: int) -> None:
        assert self.process is not None
        wait_while_running(
            self.process,
            lambda: http_ok(f"http://127.0.0.1:{health_port}/readyz"),
            READY_TIMEOUT_S,
            what="kueue readyz",
        )

    def _wait_webhooks(self) -> None:
        """Until the API server reaches the webhooks: a dry-run ResourceFlavor goes through Kueue's
        defaulting and validation."""
        flavor = {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": "webhook-probe"},
        }
        path = self.workdir / "probe.yaml"
        path.write_text(yaml.safe_dump(flavor))

        def reachable() -> bool:
            return (
                self.control_plane.kubectl(
                    "create", "--dry-run=server", "-f", str(path), check=False
                ).returncode
                == 0
            )

        wait_until(reachable, 60, interval=0.5, what="kueue's webhooks through the API server")
