"""The chart's admission policy for search authors, enforced by the real API server: impersonated
users create SustainSearches (server-side dry runs, so no operator is needed), and each refusal
names its rule. The policy is bound to the test's namespace only, so other tests are untouched."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sustaindiffusion.api.resource import API_VERSION, KIND
from tests.support.chart import CHART, helm, render, write_values
from tests.support.controlplane import ControlPlane
from tests.support.processes import wait_until

AUTHOR, STRANGER = "alice", "bob"
LIMITS = {"maxPopulationSize": 32, "maxParallelism": 4, "maxImagesPerCandidate": 40}
SPEC: dict[str, Any] = {
    "model": {"id": "org/model", "tokenSecretRef": {"name": "hub-token"}, "cache": {"claimName": "weights"}},
    "prompts": {"inline": ["Photo portrait of a nurse", "Photo portrait of a pilot"], "imagesPerPrompt": 10},
    "algorithm": {"populationSize": 16},
    "execution": {
        "image": "registry.internal/ml/worker:1.2",
        "parallelism": 2,
        "priorityClassName": "batch-high",
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "artifacts": {"claimName": "artifacts"},
    },
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """SPEC with one field (dotted path) set, or removed when `value` is None."""
    spec = copy.deepcopy(SPEC)
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return spec


@pytest.fixture(scope="module")
def policy_namespace(
    control_plane: ControlPlane,
    crd_installed: None,
    api_client: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A namespace with the chart's policy bound to it, and RBAC for the author: Jobs, the
    hub-token Secret, the two claims and the PriorityClass; the stranger may only create searches."""
    namespace = "admission-e2e"
    core, rbac = client.CoreV1Api(api_client), client.RbacAuthorizationV1Api(api_client)
    core.create_namespace({"metadata": {"name": namespace}})
    values = {
        "admission": {
            "allowedImages": ["registry.internal/ml/"],
            "allowedSchedulers": ["default-scheduler", "volcano"],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            **LIMITS,
        }
    }
    values_file = write_values(tmp_path_factory.mktemp("admission"), values)
    rendered = helm(
        control_plane,
        "template",
        "adm",
        str(CHART),
        "-f",
        str(values_file),
        "--show-only",
        "templates/admission.yaml",
    ).stdout
    control_plane.kubectl("apply", "-f", "-", input_text=rendered)
    searches = {
        "apiGroups": ["sustaindiffusion.io"],
        "resources": ["sustainsearches"],
        "verbs": ["create", "update", "get", "patch"],
    }
    author_rules = [
        searches,
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["hub-token"], "verbs": ["get"]},
        {
            "apiGroups": [""],
            "resources": ["persistentvolumeclaims"],
            "resourceNames": ["weights", "artifacts"],
            "verbs": ["get"],
        },
    ]
    for user, rules in ((AUTHOR, author_rules), (STRANGER, [searches])):
        rbac.create_namespaced_role(namespace, {"metadata": {"name": user}, "rules": rules})
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": user},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            },
        )
    rbac.create_cluster_role(
        {
            "metadata": {"name": "admission-e2e-priority"},
            "rules": [
                {
                    "apiGroups": ["scheduling.k8s.io"],
                    "resources": ["priorityclasses"],
                    "resourceNames": ["batch-high"],
                    "verbs": ["use"],
                }
            ],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "admission-e2e-priority"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "admission-e2e-priority",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": AUTHOR}],
        }
    )
    # The API server enforces a new policy once its informers have it (about a second later).
    wait_until(
        lambda: not _create(control_plane, namespace, STRANGER, SPEC)[0], 60, what="the policy to be enforced"
    )
    try:
        yield namespace
    finally:
        control_plane.kubectl("delete", "--ignore-not-found", "-f", "-", input_text=rendered)
        rbac.delete_cluster_role_binding("admission-e2e-priority")
        rbac.delete_cluster_role("admission-e2e-priority")
        core.delete_namespace(namespace)


def _create(
    plane: ControlPlane, namespace: str, user: str, spec: dict[str, Any], name: str = "s"
) -> tuple[bool, str]:
    """A server-side dry-run create as `user`: whether it was admitted, and the API server's words."""
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    result = plane.kubectl(
        "create", "--dry-run=server", f"--as={user}", "-f", "-", input_text=json.dumps(body), check=False
    )
    return result.returncode == 0, result.stderr


def test_the_policy_type_checks_against_the_crd(control_plane: ControlPlane, policy_namespace: str) -> None:
    """The API server compiles each expression against the CRD's schema: a misspelt field would be a
    warning here, not a refusal that never comes."""

    def checked() -> dict[str, Any]:
        shown = control_plane.kubectl(
            "get", "validatingadmissionpolicy", "adm-sustaindiffusion-search-authors", "-o", "json"
        )
        return dict(json.loads(shown.stdout).get("status") or {})

    wait_until(lambda: "typeChecking" in checked(), 60, what="the policy's type checking")
    assert checked()["typeChecking"].get("expressionWarnings") is None, checked()


def test_an_author_who_could_run_the_jobs_directly_is_admitted(
    control_plane: ControlPlane, policy_namespace: str
) -> None:
    admitted, message = _create(control_plane, policy_namespace, AUTHOR, SPEC)
    assert admitted, message
    minimal = {"prompts": {"inline": ["Photo portrait of a nurse"]}}  # CRD defaults, the chart's worker image
    admitted, message = _create(control_plane, policy_namespace, AUTHOR, minimal)
    assert admitted, message


@pytest.mark.parametrize(
    ("user", "spec", "rule"),
    [
        (STRANGER, SPEC, "rule run-jobs: bob may not create Jobs in namespace admission-e2e"),
        (
            AUTHOR,
            _with("execution.image", "docker.io/evil/miner:latest"),
            "rule allowed-images: spec.execution.image docker.io/evil/miner:latest",
        ),
        (AUTHOR, _with("execution.image", "sustaindiffusion/worker-evil:1"), "rule allowed-images"),
        (
            AUTHOR,
            _with("model.tokenSecretRef", {"name": "admin-token"}),
            "rule read-token-secret: alice may not get the Secret admin-token",
        ),
        (
            AUTHOR,
            _with("model.cache", {"claimName": "other-team"}),
            "rule use-claims: alice may not get the PersistentVolumeClaim other-team (spec.model.cache)",
        ),
        (AUTHOR, _with("execution.artifacts", {"claimName": "other-team"}), "(spec.execution.artifacts)"),
        (
            AUTHOR,
            _with("execution.priorityClassName", "system-cluster-critical"),
            "rule use-priority-class: alice may not use the PriorityClass system-cluster-critical",
        ),
        (
            AUTHOR,
            _with("execution.schedulerName", "my-scheduler"),
            "rule allowed-schedulers: spec.execution.schedulerName my-scheduler",
        ),
        (AUTHOR, _with("execution.tolerations", [{"operator": "Exists"}]), "rule no-wildcard-tolerations"),
        (
            AUTHOR,
            _with("algorithm.populationSize", 64),
            "rule max-population: spec.algorithm.populationSize 64 is more than this cluster allows (32)",
        ),
        (
            AUTHOR,
            _with("execution.parallelism", 8),
            "rule max-parallelism: spec.execution.parallelism 8 is more than this cluster allows (4)",
        ),
        (
            AUTHOR,
            _with("prompts.imagesPerPrompt", 21),
            "rule max-images-per-candidate: 42 images per candidate",
        ),
        (
            AUTHOR,
            _with("algorithm.evidence", {"imagesPerPrompt": 5, "maxImagesPerPrompt": 30}),
            "rule max-images-per-candidate: 60",
        ),
    ],
    ids=[
        "cannot-create-jobs",
        "foreign-registry",
        "lookalike-repository",
        "unreadable-secret",
        "foreign-cache-claim",
        "foreign-artifacts-claim",
        "priority-class-not-granted",
        "scheduler-not-allowed",
        "wildcard-toleration",
        "population",
        "parallelism",
        "images-per-candidate",
        "evidence-images",
    ],
)
def test_each_refusal_names_its_rule(
    control_plane: ControlPlane, policy_namespace: str, user: str, spec: dict[str, Any], rule: str
) -> None:
    admitted, message = _create(control_plane, policy_namespace, user, spec)
    assert not admitted
    assert "denied request" in message
    assert rule in message, message


def test_a_change_of_the_spec_is_checked_and_status_writes_are_not(
    control_plane: ControlPlane, api_client: client.ApiClient, policy_namespace: str
) -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "kept", "namespace": policy_namespace},
        "spec": SPEC,
    }
    control_plane.kubectl("create", f"--as={AUTHOR}", "-f", "-", input_text=json.dumps(body))
    try:
        patch = json.dumps({"spec": {"execution": {"parallelism": 16}}})
        refused = control_plane.kubectl(
            "patch",
            "sustainsearch",
            "kept",
            "-n",
            policy_namespace,
            f"--as={AUTHOR}",
            "--type=merge",
            "-p",
            patch,
            check=False,
        )
        assert refused.returncode != 0
        assert "rule max-parallelism: spec.execution.parallelism 16" in refused.stderr
        # The stranger may not change a search's spec either, but may patch its labels (no spec change).
        relabel = json.dumps({"metadata": {"labels": {"team": "vision"}}})
        relabelled = control_plane.kubectl(
            "patch",
            "sustainsearch",
            "kept",
            "-n",
            policy_namespace,
            f"--as={STRANGER}",
            "--type=merge",
            "-p",
            relabel,
            check=False,
        )
        assert relabelled.returncode == 0, relabelled.stderr
        status = json.dumps({"status": {"phase": "Running"}})
        written = control_plane.kubectl(
            "patch",
            "sustainsearch",
            "kept",
            "-n",
            policy_namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
            check=False,
        )
        assert written.returncode == 0, written.stderr
    finally:
        control_plane.kubectl("delete", "sustainsearch", "kept", "-n", policy_namespace, "--wait=false")


def test_the_chart_binds_the_policy_to_the_namespaces_of_its_scope(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    def binding(values: dict[str, Any]) -> dict[str, Any]:
        documents = render(control_plane, write_values(tmp_path, values), "templates/admission.yaml")
        return next(d for d in documents if d["kind"] == "ValidatingAdmissionPolicyBinding")

    namespaced = binding({"rbac": {"scope": "namespaced"}, "watchNamespaces": ["team-a", "team-b"]})
    selector = namespaced["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]
    assert (selector["key"], selector["operator"], selector["values"]) == (
        "kubernetes.io/metadata.name",
        "In",
        ["team-a", "team-b"],
    )
    assert "matchResources" not in binding({"rbac": {"scope": "cluster"}})["spec"]  # every namespace
    off = helm(control_plane, "template", "sd", str(CHART), "--set", "admission.enabled=false")
    assert "ValidatingAdmissionPolicy" not in off.stdout
