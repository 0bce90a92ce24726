"""The Helm chart: lint, rendering accepted by the real API server for several value sets,
least-privilege RBAC checked with `kubectl auth can-i`, and an install whose operator (run by the
test kubelet with its own service-account token) drives a search to completion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from sustaindiffusion.api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.kube import builders
from tests.e2e.conftest import fresh_namespace
from tests.support.chart import CHART, helm, render, write_values
from tests.support.controlplane import ControlPlane
from tests.support.kubelet import TestKubelet
from tests.support.processes import wait_until
from tests.support.slots import free_port
from tests.support.tasks import task_of
from tests.support.tiny import ensure_tiny_models

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cluster": {"rbac": {"scope": "cluster"}, "networkPolicy": {"namespaces": ["team-a"]}},
    "namespaced": {
        "rbac": {"scope": "namespaced"},
        "watchNamespaces": ["team-a", "team-b"],
        "serviceAccount": {"name": "searcher"},
    },
    "scheduling": {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "priorityClassName": "",
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        "grafana": {"dashboard": {"enabled": False}},
    },
    "image-and-metrics": {
        "image": {"repository": "registry.internal/sd/operator", "tag": "0.1.0-rc1", "pullPolicy": "Always"},
        "metrics": {"port": 9090},
        "podAnnotations": {"team": "vision"},
    },
}


def test_helm_lint_passes(control_plane: ControlPlane) -> None:
    result = helm(control_plane, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_values_schema_refuses_bad_values(control_plane: ControlPlane, tmp_path: Path) -> None:
    bad = write_values(tmp_path, {"rbac": {"scope": "everywhere"}})
    result = helm(control_plane, "template", "t", str(CHART), "-f", str(bad), check=False)
    assert result.returncode != 0
    assert "'/rbac/scope': value must be one of 'cluster', 'namespaced'" in result.stderr


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_rendered_chart_is_accepted_by_the_api_server(
    control_plane: ControlPlane,
    crd_installed: None,
    api_client: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    name: str,
) -> None:
    core = client.CoreV1Api(api_client)
    values = VALUE_SETS[name]
    for extra in [*values.get("watchNamespaces", []), *values.get("networkPolicy", {}).get("namespaces", [])]:
        if not core.list_namespace(field_selector=f"metadata.name={extra}").items:
            core.create_namespace({"metadata": {"name": extra}})
    rendered = helm(
        control_plane,
        "template",
        "sd",
        str(CHART),
        "--namespace",
        namespace,
        "-f",
        str(write_values(tmp_path, VALUE_SETS[name])),
    ).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered) if d]
    assert "Deployment" in kinds
    result = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input_text=rendered, check=False)
    assert result.returncode == 0, result.stderr


def test_monitors_render_with_selector_labels(control_plane: ControlPlane, tmp_path: Path) -> None:
    values = {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "podMonitor": {"enabled": True},
        }
    }
    rendered = helm(
        control_plane, "template", "sd", str(CHART), "-f", str(write_values(tmp_path, values))
    ).stdout
    documents = {d["kind"]: d for d in yaml.safe_load_all(rendered) if d}
    assert documents["ServiceMonitor"]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert (
        documents["PodMonitor"]["spec"]["selector"]["matchLabels"]["sustaindiffusion.io/component"]
        == "worker"
    )
    dashboard = json.loads(documents["ConfigMap"]["data"]["sustaindiffusion.json"])
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    assert "uid" not in dashboard


ALLOWED = [
    ("list", "sustainsearches.sustaindiffusion.io"),
    ("watch", "sustainsearches.sustaindiffusion.io"),
    ("patch", "sustainsearches.sustaindiffusion.io/status"),
    ("create", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("deletecollection", "jobs.batch"),
    ("watch", "pods"),
    ("create", "configmaps"),
    ("patch", "configmaps"),
    ("create", "events"),
    ("create", "leases.coordination.k8s.io"),
    ("update", "leases.coordination.k8s.io"),
]
DENIED = [
    ("delete", "sustainsearches.sustaindiffusion.io"),
    ("update", "sustainsearches.sustaindiffusion.io"),
    ("create", "pods"),
    ("delete", "pods"),
    ("patch", "jobs.batch"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "deployments.apps"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts/token"),
    ("patch", "sustainsearches.sustaindiffusion.io"),
]


def can_i(plane: ControlPlane, who: str, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i`; "things/status" asks about the status subresource."""
    kind, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    result = plane.kubectl("auth", "can-i", verb, kind, *extra, "-n", namespace, f"--as={who}", check=False)
    return result.stdout.strip() == "yes"


def test_install_runs_the_operator_with_exactly_its_permissions(
    control_plane: ControlPlane,
    crd_installed: None,
    api_client: client.ApiClient,
    test_kubelet: TestKubelet,
    namespace: str,
    tmp_path: Path,
) -> None:
    values = {
        "rbac": {"scope": "namespaced"},
        "metrics": {"port": free_port()},
        "grafana": {"dashboard": {"enabled": False}},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }
    helm(
        control_plane,
        "install",
        "sd",
        str(CHART),
        "--namespace",
        namespace,
        "--skip-crds",
        "-f",
        str(write_values(tmp_path, values)),
    )
    operator_account = f"system:serviceaccount:{namespace}:sd-sustaindiffusion"
    for verb, resource in ALLOWED:
        assert can_i(control_plane, operator_account, verb, resource, namespace), (
            f"operator cannot {verb} {resource}"
        )
    for verb, resource in DENIED:
        assert not can_i(control_plane, operator_account, verb, resource, namespace), (
            f"operator may {verb} {resource}"
        )
    # Worker pods run as the namespace's default account, without a token, and that account has no access.
    worker_account = f"system:serviceaccount:{namespace}:default"
    for verb, resource in [
        ("list", "pods"),
        ("get", "configmaps"),
        ("get", "sustainsearches.sustaindiffusion.io"),
    ]:
        assert not can_i(control_plane, worker_account, verb, resource, namespace)

    core = client.CoreV1Api(api_client)

    def operator_running() -> bool:
        pods = core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=operator"
        ).items
        return bool(pods) and pods[0].status.phase == "Running"

    wait_until(operator_running, 120, what="the operator pod")
    models = ensure_tiny_models()
    spec = {
        "model": {"id": str(models / "sd3"), "dtype": "float32", "width": 64, "height": 64},
        "prompts": {"inline": ["Photo portrait of a Software Engineer that codes."], "imagesPerPrompt": 1},
        "searchSpace": {"inferenceSteps": {"min": 1, "max": 2}},
        "scoring": {
            "vqaModel": {"id": str(models / "blip-vqa")},
            "quality": {"model": {"id": str(models / "clip")}},
            "humanFilter": {"enabled": False},
        },
        "constraints": {"quality": {"enabled": False}},
        "algorithm": {"populationSize": 4, "generations": 1, "seed": 2},
        "execution": {"candidatesPerPod": 4, "resources": {"requests": {"cpu": "100m"}}},
    }
    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "via-helm"}, "spec": spec},
    )

    def succeeded() -> bool:
        body: Any = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "via-helm")
        return (body.get("status") or {}).get("phase") == "Succeeded"

    logs = sorted(test_kubelet.root.glob(f"{namespace}_sd-sustaindiffusion-*/container.log"))
    try:
        wait_until(succeeded, 300, interval=1.0, what="the search run by the Helm-installed operator")
    except TimeoutError as error:
        tails = "\n".join(p.read_text(errors="replace")[-3000:] for p in logs)
        raise AssertionError(f"{error}\n--- operator pod log ---\n{tails}") from None
    helm(control_plane, "uninstall", "sd", "--namespace", namespace)


def test_network_policies_select_the_pods_the_operator_builds(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    values = write_values(
        tmp_path, {"rbac": {"scope": "namespaced"}, "watchNamespaces": ["team-a", "team-b"]}
    )
    policies = render(control_plane, values, "templates/networkpolicy.yaml")
    workers = [p for p in policies if p["metadata"]["name"] == "sd-sustaindiffusion-workers"]
    assert sorted(p["metadata"]["namespace"] for p in workers) == ["team-a", "team-b"]
    spec = SustainSearchSpec.model_validate({"prompts": {"inline": ["p"]}})
    pod = builders.worker_job(builders.SearchRef("s", "team-a", "uid"), spec, task_of(spec))["spec"][
        "template"
    ]
    selector = workers[0]["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    ports = {port["name"] for port in pod["spec"]["containers"][0]["ports"]}
    assert {port["port"] for port in workers[0]["spec"]["ingress"][0]["ports"]} <= ports
    egress_ports = [port["port"] for rule in workers[0]["spec"]["egress"] for port in rule.get("ports", [])]
    assert egress_ports == [53, 53, 443]  # DNS and HTTPS to the hub, nothing else
    off = helm(control_plane, "template", "sd", str(CHART), "--set", "networkPolicy.enabled=false").stdout
    assert "kind: NetworkPolicy" not in off


@pytest.mark.parametrize("scope", ["namespaced", "cluster"])
def test_the_operators_rbac_reaches_exactly_the_namespaces_of_its_scope(
    control_plane: ControlPlane, crd_installed: None, api_client: client.ApiClient, tmp_path: Path, scope: str
) -> None:
    """The can-i matrix of each scope: namespaced (the default) acts in its watched namespace and
    nowhere else, kube-system included; cluster acts in every namespace."""
    with fresh_namespace(api_client) as home, fresh_namespace(api_client) as elsewhere:
        release = f"rbac-{scope}"
        rendered = helm(
            control_plane,
            "template",
            release,
            str(CHART),
            "--namespace",
            home,
            "--set",
            f"rbac.scope={scope}",
            "--show-only",
            "templates/rbac.yaml",
            "--show-only",
            "templates/serviceaccount.yaml",
        ).stdout
        control_plane.kubectl("apply", "-n", home, "-f", "-", input_text=rendered)
        try:
            account = f"system:serviceaccount:{home}:{release}-sustaindiffusion"
            reached = [home, elsewhere, "kube-system"] if scope == "cluster" else [home]
            for namespace in (home, elsewhere, "kube-system"):
                for verb, resource in ALLOWED:
                    if resource.startswith("leases"):
                        continue  # the leader-election Lease lives in the release namespace only
                    allowed = can_i(control_plane, account, verb, resource, namespace)
                    assert allowed == (namespace in reached), f"{scope}: {verb} {resource} in {namespace}"
                for verb, resource in DENIED:
                    assert not can_i(control_plane, account, verb, resource, namespace), (
                        f"{scope}: may {verb} {resource} in {namespace}"
                    )
        finally:
            control_plane.kubectl("delete", "-n", home, "--ignore-not-found", "-f", "-", input_text=rendered)
