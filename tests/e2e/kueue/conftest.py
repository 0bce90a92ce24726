"""Kueue's tests get a control plane of their own with Kueue running against it: Kueue manages
every Job that carries a queue label, and the other suites' Jobs carry one without a Kueue to
admit them (`test_a_suspended_job_is_queued_not_failed_and_resumes` plays Kueue by hand)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from sustaindiffusion.api.crd import CRD_PATH
from tests.support.controlplane import ControlPlane
from tests.support.environment import admin_client, started_control_plane, started_kubelet
from tests.support.kubelet import TestKubelet
from tests.support.kueue import Kueue


@pytest.fixture(scope="package")
def control_plane() -> Iterator[ControlPlane]:
    with started_control_plane("sd-kueue-plane-") as plane:
        yield plane


@pytest.fixture(scope="package")
def kueue(control_plane: ControlPlane) -> Iterator[Kueue]:
    manager = Kueue(control_plane, control_plane.binaries.kubectl.parent, control_plane.workdir / "kueue")
    manager.start()
    try:
        yield manager
    finally:
        manager.stop()


@pytest.fixture(scope="package")
def api_client(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with admin_client(control_plane) as api:
        yield api


@pytest.fixture(scope="package")
def test_kubelet(api_client: client.ApiClient) -> Iterator[TestKubelet]:
    with started_kubelet(api_client, "sd-kueue-kubelet-") as kubelet:
        yield kubelet


@pytest.fixture(scope="package")
def crd_installed(control_plane: ControlPlane, kueue: Kueue) -> None:
    control_plane.install_crds(CRD_PATH)
