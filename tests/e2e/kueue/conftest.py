"""Kueue's tests get a control plane of their own with Kueue running against it: Kueue manages
every Job that carries a queue label, and the other suites' Jobs carry one without a Kueue to
admit them (`test_a_suspended_job_is_queued_not_failed_and_resumes` plays Kueue by hand)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from sustaindiffusion.api.crd import CRD_PATH
from tests.support.controlplane import ControlPlane, locate_binaries
from tests.support.kubelet import TestKubelet
from tests.support.kueue import Kueue
from tests.support.processes import group_is_empty

KEEP_ENV = "SUSTAINDIFFUSION_KEEP_TEST_DIRS"


@pytest.fixture(scope="package")
def control_plane() -> Iterator[ControlPlane]:
    workdir = Path(tempfile.mkdtemp(prefix="sd-kueue-plane-"))
    plane = ControlPlane(locate_binaries(), workdir)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()
        if not os.environ.get(KEEP_ENV):
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="package")
def kueue(control_plane: ControlPlane) -> Iterator[Kueue]:
    bin_dir = control_plane.binaries.kubectl.parent
    manager = Kueue(control_plane, bin_dir, control_plane.workdir / "kueue")
    manager.start()
    try:
        yield manager
    finally:
        manager.stop()


@pytest.fixture(scope="package")
def api_client(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="package")
def test_kubelet(api_client: client.ApiClient) -> Iterator[TestKubelet]:
    root = Path(tempfile.mkdtemp(prefix="sd-kueue-kubelet-"))
    env = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR") if k in os.environ}
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
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


@pytest.fixture(scope="package")
def crd_installed(control_plane: ControlPlane, kueue: Kueue) -> None:
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/sustainsearches.sustaindiffusion.io"
    )
