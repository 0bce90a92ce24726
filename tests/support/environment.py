"""The pieces of an end-to-end environment, for the suites' fixtures: a control plane in a temp
dir, an admin client of it, a test kubelet whose pods run this environment's commands, and a real
kubelet with containerd whose pods run images."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kubernetes import client, config

from tests.support.controlplane import ControlPlane, locate_binaries
from tests.support.kubelet import TestKubelet
from tests.support.node import ContainerNode
from tests.support.processes import group_is_empty

KEEP_ENV = "SUSTAINDIFFUSION_KEEP_TEST_DIRS"


@contextlib.contextmanager
def started_control_plane(prefix: str, pod_reachable_ips: tuple[str, ...] = ()) -> Iterator[ControlPlane]:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    plane = ControlPlane(locate_binaries(), workdir, pod_reachable_ips)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()
        if not os.environ.get(KEEP_ENV):
            shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def admin_client(plane: ControlPlane) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    try:
        yield api
    finally:
        api.close()


def kubelet_pod_env() -> dict[str, str]:
    """What a test kubelet's pods inherit: pods run console scripts of this environment
    (sustaindiffusion-worker), so its bin comes first on PATH."""
    env = {
        k: os.environ[k]
        for k in ("HOME", "LANG", "TMPDIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
        if k in os.environ
    }
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env["HF_HUB_OFFLINE"] = "1"
    return env


def stop_kubelet(kubelet: TestKubelet) -> None:
    """Stop it and fail if a pod's process group outlived it."""
    kubelet.stop()
    leftovers = [pgid for pgid in kubelet.process_groups() if not group_is_empty(pgid)]
    assert not leftovers, f"test-kubelet pod processes left running: {leftovers}"


@contextlib.contextmanager
def started_kubelet(api_client: client.ApiClient, prefix: str) -> Iterator[TestKubelet]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    kubelet = TestKubelet(api_client, root, base_env=kubelet_pod_env())
    kubelet.start()
    try:
        yield kubelet
    finally:
        try:
            stop_kubelet(kubelet)
        finally:
            if not os.environ.get(KEEP_ENV):
                shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def started_container_node(plane: ControlPlane, prefix: str) -> Iterator[ContainerNode]:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    node = ContainerNode(plane, workdir)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        if not os.environ.get(KEEP_ENV):
            shutil.rmtree(workdir, ignore_errors=True)
