"""Fixtures for end-to-end tests on a real control plane (see tests/support/controlplane.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from sustaindiffusion.api.crd import CRD_PATH
from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from tests.support.controlplane import ControlPlane, locate_binaries
from tests.support.kubelet import TestKubelet
from tests.support.processes import group_is_empty, wait_until
from tests.support.searches import OperatorProcess
from tests.support.tiny import ensure_tiny_models

KEEP_ENV = "SUSTAINDIFFUSION_KEEP_TEST_DIRS"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    workdir = Path(tempfile.mkdtemp(prefix="sd-controlplane-"))
    plane = ControlPlane(locate_binaries(), workdir)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()
        if not os.environ.get(KEEP_ENV):
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def api_client(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def test_kubelet(api_client: client.ApiClient) -> Iterator[TestKubelet]:
    root = Path(tempfile.mkdtemp(prefix="sd-kubelet-"))
    # Pods run console scripts of this environment (sustaindiffusion-worker): put its bin first.
    env = {
        k: os.environ[k]
        for k in ("HOME", "LANG", "TMPDIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
        if k in os.environ
    }
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env["HF_HUB_OFFLINE"] = "1"
    kubelet = TestKubelet(api_client, root, base_env=env)
    kubelet.start()
    try:
        yield kubelet
    finally:
        kubelet.stop()
        leftovers = [pgid for pgid in kubelet.process_groups() if not group_is_empty(pgid)]
        if not os.environ.get(KEEP_ENV):
            shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"test-kubelet pod processes left running: {leftovers}"


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
