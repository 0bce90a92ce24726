"""Fixtures for end-to-end tests on a real control plane (see tests/support/controlplane.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from sustaindiffusion.api.crd import CRD_PATH
from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from tests.support.controlplane import ControlPlane
from tests.support.environment import KEEP_ENV, admin_client, started_control_plane, started_kubelet
from tests.support.kubelet import TestKubelet
from tests.support.processes import wait_until
from tests.support.searches import OperatorProcess
from tests.support.tiny import ensure_tiny_models


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with started_control_plane("sd-controlplane-") as plane:
        yield plane


@pytest.fixture(scope="session")
def api_client(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with admin_client(control_plane) as api:
        yield api


@pytest.fixture(scope="session")
def test_kubelet(api_client: client.ApiClient) -> Iterator[TestKubelet]:
    with started_kubelet(api_client, "sd-kubelet-") as kubelet:
        yield kubelet


@pytest.fixture(scope="session")
def crd_installed(control_plane: ControlPlane, api_client: client.ApiClient) -> None:
    """The SustainSearch CRD from crds/, established and discoverable."""
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    extensions = client.ApiextensionsV1Api(api_client)

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_until(established, 60, what="the SustainSearch CRD to be established")
    custom = client.CustomObjectsApi(api_client)
    wait_until(
        lambda: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL) is not None, 30, what="discovery"
    )


RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@contextlib.contextmanager
def fresh_namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A new namespace whose default ServiceAccount exists; deleted afterwards. It enforces the
    `restricted` Pod Security Standard, so every worker and operator pod of the tests meets it."""
    core = client.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name, "labels": RESTRICTED}})
    wait_until(
        lambda: core.read_namespaced_service_account("default", name),
        timeout=60,
        what=f"default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        core.delete_namespace(name)


@contextlib.contextmanager
def running_operator(control_plane: ControlPlane, namespace: str) -> Iterator[OperatorProcess]:
    """The operator as its own process watching `namespace`; killed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="sd-operator-"))
    process = OperatorProcess(control_plane, namespace, workdir)
    process.start()
    try:
        yield process
    finally:
        process.kill()
        if not os.environ.get(KEEP_ENV):
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    with fresh_namespace(api_client) as name:
        yield name


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    return ensure_tiny_models()


@pytest.fixture
def operator(
    control_plane: ControlPlane, crd_installed: None, test_kubelet: TestKubelet, namespace: str
) -> Iterator[OperatorProcess]:
    with running_operator(control_plane, namespace) as process:
        yield process
