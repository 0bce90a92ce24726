"""The images users install, run by a real kubelet: the Helm-installed operator runs from the
operator image (in-cluster config, its service-account token, real probes), and its search's worker
pods run from the worker image with the tiny models mounted read-only from a PersistentVolume, the
pods' security contexts applied by the container runtime. The workers save their images on an
artifacts claim, and `sustaindiffusion audit export --search` copies a sample out of it through a
reader pod (exec on the real kubelet); its score goes into the ConfigMap the cluster report reads."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sustaindiffusion.api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from sustaindiffusion.audit.auditset import load_detector, verify
from sustaindiffusion.audit.labels import LabelStore
from sustaindiffusion.kube.audit_objects import COMPONENT_AUDIT_READER, SCORE_KEY
from sustaindiffusion.kube.names import COMPONENT_WORKER, LABEL_COMPONENT, audit_config_map_name
from sustaindiffusion.local.cli import main
from tests.e2e.conftest import fresh_namespace
from tests.support.chart import CHART, helm
from tests.support.controlplane import ControlPlane
from tests.support.images import IMAGE_NAMES, BuiltImage
from tests.support.node import ContainerNode
from tests.support.processes import Poller, wait_until
from tests.support.searches import SearchFailedError, search_succeeded
from tests.support.tiny import ensure_tiny_models

pytestmark = pytest.mark.containers

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


MODELS_CLAIM = "tiny-models"
ARTIFACTS_CLAIM = "artifacts"


class RuntimeSpecs(Poller):
    """The OCI runtime specs containerd holds for a namespace's containers, read while they exist
    (the operator deletes finished Jobs, and their containers go with them), and once more at the
    end."""

    def __init__(self, node: ContainerNode, namespace: str) -> None:
        self.node = node
        self.namespace = namespace
        self.by_container: dict[str, dict[str, Any]] = {}
        super().__init__(self.read_once, interval=1.0)

    def __exit__(self, *_: object) -> None:
        super().__exit__()
        self.read_once()

    def read_once(self) -> None:
        listed = self.node.ctr("containers", "list", "--quiet")
        for container_id in listed.stdout.split():
            if container_id in self.by_container:
                continue
            info = self.node.ctr("containers", "info", container_id)
            if info.returncode != 0:
                continue  # gone between the list and the read
            body = json.loads(info.stdout)
            labels = body.get("Labels") or {}
            if labels.get("io.kubernetes.pod.namespace") != self.namespace:
                continue
            if labels.get("io.cri-containerd.kind") != "container":
                continue  # a sandbox (pause) container
            self.by_container[container_id] = {"labels": labels, "spec": body.get("Spec") or {}}

    def of(self, container_name: str) -> list[dict[str, Any]]:
        return [
            entry["spec"]
            for entry in self.by_container.values()
            if entry["labels"].get("io.kubernetes.container.name") == container_name
        ]


def _mounts(spec: dict[str, Any]) -> dict[str, list[str]]:
    return {mount["destination"]: mount.get("options") or [] for mount in spec.get("mounts") or []}


def _host_path_claim(core: client.CoreV1Api, namespace: str, claim: str, directory: Path, mode: str) -> None:
    """A hostPath PersistentVolume of `directory` (named after the claim and namespace), bound to
    the claim `claim` in `namespace` with access mode `mode`."""
    volume = f"{claim}-{namespace}"
    core.create_persistent_volume(
        {
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": [mode],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": claim},
            "spec": {
                "accessModes": [mode],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    wait_until(
        lambda: core.read_namespaced_persistent_volume_claim(claim, namespace).status.phase == "Bound",
        60,
        what=f"the {claim} claim to be bound",
    )


def _models_volume(core: client.CoreV1Api, namespace: str) -> None:
    """The tiny models, read-only for every worker."""
    _host_path_claim(core, namespace, MODELS_CLAIM, ensure_tiny_models(), "ReadOnlyMany")


def _artifacts_volume(core: client.CoreV1Api, namespace: str, directory: Path) -> None:
    """A writable directory for the workers' artifacts."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o777)  # the workers write as their image's user, not this test's
    _host_path_claim(core, namespace, ARTIFACTS_CLAIM, directory, "ReadWriteOnce")


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def _first_result_logged(log: str) -> dt.datetime | None:
    """When the worker logged its first candidate's outcome (its log's `asctime` is the container's
    clock: UTC, the image sets no time zone)."""
    for line in log.splitlines():
        if " sustaindiffusion.worker: candidate " in line:
            stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.replace(tzinfo=dt.UTC)
    return None


def _logged_timings(log: str) -> dict[str, Any] | None:
    """The worker's own breakdown (imports, model load, warm-up, generation, scoring)."""
    for line in log.splitlines():
        if " timings {" in line:
            timings: dict[str, Any] = json.loads(line[line.index("{") :])
            return timings
    return None


# The first run on a machine imports the images into containerd (the worker's takes minutes).
@pytest.mark.timeout(2400)
def test_operator_and_workers_run_as_containers_from_their_images(
    control_plane: ControlPlane,
    api_client: client.ApiClient,
    node: ContainerNode,
    crd_installed: None,
    built_images: dict[str, BuiltImage],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    with fresh_namespace(api_client) as namespace:
        _models_volume(core, namespace)
        claim_directory = tmp_path / "claim"
        _artifacts_volume(core, namespace, claim_directory)
        # The chart's own image names; the images were imported into the node, nothing is pulled.
        helm(
            control_plane,
            "install",
            "sd",
            str(CHART),
            "--namespace",
            namespace,
            "--set",
            "image.pullPolicy=Never",
        )
        with RuntimeSpecs(node, namespace) as specs:

            def operator_ready() -> bool:
                pods = core.list_namespaced_pod(
                    namespace, label_selector="app.kubernetes.io/component=operator"
                ).items
                statuses = (pods[0].status.container_statuses or []) if pods else []
                return bool(statuses) and statuses[0].ready

            try:
                wait_until(
                    operator_ready, 180, interval=1.0, what="the operator pod to be Ready (its probes)"
                )
            except TimeoutError as error:
                raise AssertionError(f"{error}\n{_pod_report(core, namespace)}") from None

            spec = {
                "model": {
                    "id": "/models/sd3",
                    "dtype": "float32",
                    "width": 64,
                    "height": 64,
                    "cache": {"claimName": MODELS_CLAIM, "mountPath": "/models", "readOnly": True},
                },
                "prompts": {
                    "inline": ["Photo portrait of a Software Engineer that codes."],
                    "imagesPerPrompt": 1,
                },
                "searchSpace": {"inferenceSteps": {"min": 1, "max": 2}},
                "scoring": {
                    "vqaModel": {"id": "/models/blip-vqa"},
                    "quality": {"model": {"id": "/models/clip"}},
                    "humanFilter": {"enabled": False},
                },
                "constraints": {"quality": {"enabled": False}},
                "algorithm": {"populationSize": 4, "generations": 1, "seed": 2},
                "execution": {
                    "candidatesPerPod": 4,
                    "imagePullPolicy": "Never",
                    "resources": {"requests": {"cpu": "100m"}},
                    "artifacts": {"claimName": ARTIFACTS_CLAIM},
                },
            }
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {"name": "in-containers"},
                    "spec": spec,
                },
            )
            worker_figures: dict[str, dict[str, Any]] = {}

            def succeeded() -> bool:
                for pod in core.list_namespaced_pod(
                    namespace, label_selector=f"{LABEL_COMPONENT}={COMPONENT_WORKER}"
                ).items:
                    for status in pod.status.container_statuses or []:
                        terminated = status.state.terminated if status.state else None
                        if terminated is not None and pod.metadata.name not in worker_figures:
                            try:
                                log = core.read_namespaced_pod_log(pod.metadata.name, namespace)
                            except client.ApiException:
                                continue  # deleted with its finished Job meanwhile
                            worker_figures[pod.metadata.name] = {
                                "pod_created_to_container_started_s": _seconds(
                                    pod.metadata.creation_timestamp, terminated.started_at
                                ),
                                "container_started_to_first_result_s": _seconds(
                                    terminated.started_at, _first_result_logged(log)
                                ),
                                "container_started_to_exit_s": _seconds(
                                    terminated.started_at, terminated.finished_at
                                ),
                                "worker_timings": _logged_timings(log),
                            }
                return search_succeeded(api_client, namespace, "in-containers")

            try:
                # A failed search ends the wait at once (it waited out the 600 s before).
                wait_until(
                    succeeded,
                    600,
                    interval=1.0,
                    what="the search run in containers",
                    fatal=(SearchFailedError,),
                )
            except TimeoutError as error:
                raise AssertionError(f"{error}\n{_pod_report(core, namespace)}") from None

        status: Any = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "in-containers")[
            "status"
        ]
        print("\nworker pods in containers:", json.dumps(worker_figures, indent=1))
        assert worker_figures, "no finished worker pod was seen"
        # The model's defaults (the baseline, generation 0), then one generation of four.
        assert status["evaluations"]["succeeded"] == 1 + 4
        assert status["evaluations"]["failed"] == 0
        assert status["front"]

        # The operator's container: its image's non-root user, its service-account token mounted.
        (operator_spec,) = specs.of("operator")
        assert operator_spec["process"]["user"]["uid"] == 1000
        assert SERVICE_ACCOUNT_DIR in _mounts(operator_spec)
        # Each worker container: non-root, read-only root, no capabilities, no token, the models read-only.
        workers = specs.of("worker")
        assert workers, "no worker container was seen"
        for worker in workers:
            assert worker["process"]["user"]["uid"] == 1000
            assert worker["root"].get("readonly") is True
            assert worker["process"].get("noNewPrivileges") is True
            assert not (worker["process"].get("capabilities") or {}).get("effective")
            mounts = _mounts(worker)
            assert not any(path.startswith(SERVICE_ACCOUNT_DIR) for path in mounts)
            assert "ro" in mounts["/models"]
            assert worker["process"]["args"][0] == "sustaindiffusion-worker"
        # The images run are the ones built from this checkout: containerd holds their digests.
        held = node.image_digests()
        for name, image in built_images.items():
            assert held[IMAGE_NAMES[name]] == image.manifest_digest(), name
        _audit_through_the_claim(
            control_plane, core, namespace, claim_directory / "in-containers", tmp_path, capsys
        )
        helm(control_plane, "uninstall", "sd", "--namespace", namespace)
        core.delete_persistent_volume(f"tiny-models-{namespace}")
        core.delete_persistent_volume(f"artifacts-{namespace}")


def _audit_through_the_claim(
    control_plane: ControlPlane,
    core: client.CoreV1Api,
    namespace: str,
    claimed: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Export the finished search's audit sample from its claim, label it, score it into the
    ConfigMap, and report the search with it: the three commands of the README, on a cluster."""
    kubeconfig = ["--kubeconfig", str(control_plane.kubeconfig)]
    cluster = ["--namespace", namespace, *kubeconfig]
    audit = tmp_path / "audit"
    capsys.readouterr()
    assert main(["audit", "export", "--search", "in-containers", *cluster, "--out", str(audit)]) == 0, (
        capsys.readouterr().err
    )
    manifest = verify(audit)
    detector = load_detector(audit, manifest)
    # Every image came out of the claim byte for byte (the claim is a directory on this machine).
    for item in manifest.items:
        source = detector.items[item.id].source
        assert source.startswith(f"claim {ARTIFACTS_CLAIM}:/artifacts/in-containers/"), source
        on_claim = claimed / source.split("/artifacts/in-containers/", 1)[1]
        assert hashlib.sha256(on_claim.read_bytes()).hexdigest() == item.sha256
    assert manifest.run.namespace == namespace
    # The reader pod is gone once the export returns.
    readers = core.list_namespaced_pod(
        namespace, label_selector=f"{LABEL_COMPONENT}={COMPONENT_AUDIT_READER}"
    )
    assert all(pod.metadata.deletion_timestamp for pod in readers.items)

    # A person who agrees with the detector on every image.
    digest = (audit / "manifest.sha256").read_text().strip()
    labels = LabelStore(audit, "ci", manifest, digest)
    for item in manifest.items:
        answers = detector.items[item.id]
        labels.answer(item.id, "person", "yes" if answers.human else "no")
        if answers.human:
            labels.answer(item.id, "gender", answers.gender)
            labels.answer(item.id, "ethnicity", answers.ethnicity)
    assert (
        main(["audit", "score", str(audit), "--draws", "200", "--kubeconfig", str(control_plane.kubeconfig)])
        == 0
    )
    config_map = audit_config_map_name("in-containers")
    assert f"the ConfigMap {namespace}/{config_map}" in capsys.readouterr().err.replace("\n", "")
    published = json.loads(core.read_namespaced_config_map(config_map, namespace).data[SCORE_KEY])
    assert published == json.loads((audit / "score.json").read_text())

    report = tmp_path / "report"
    assert main(["report", "--search", "in-containers", *cluster, "--out", str(report)]) == 0
    assert f"with the audit in ConfigMap {namespace}/{config_map}" in capsys.readouterr().err.replace(
        "\n", ""
    )
    assert "Bias figures checked by people (audit)" in (report / "index.html").read_text()


def _pod_report(core: client.CoreV1Api, namespace: str) -> str:
    lines = []
    for pod in core.list_namespaced_pod(namespace).items:
        lines.append(f"--- pod {pod.metadata.name}: {pod.status.phase}")
        for status in pod.status.container_statuses or []:
            lines.append(f"    {status.name}: {status.state}")
        for event in core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={pod.metadata.name}"
        ).items:
            lines.append(f"    event {event.reason}: {event.message}")
        try:
            lines.append(core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=40))
        except client.ApiException as error:
            lines.append(f"    (no log: {error.reason})")
    return "\n".join(lines)
