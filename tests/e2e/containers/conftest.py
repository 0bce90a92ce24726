"""The container suite: a control plane of its own whose one node is a real kubelet with containerd
(tests/support/node.py), running the project's images built by hack/build-images.sh."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from sustaindiffusion.api.crd import CRD_PATH
from tests.support.controlplane import ControlPlane
from tests.support.environment import KEEP_ENV, admin_client, started_control_plane
from tests.support.images import IMAGE_NAMES, build_images
from tests.support.node import GATEWAY, ContainerNode

OPT_IN_ENV = "SUSTAINDIFFUSION_CONTAINERS"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.containers)
            if not os.environ.get(OPT_IN_ENV):
                # Work in progress (issue 17): the node, the images and the operator's start in its
                # container work; the search run by the containerised operator does not complete yet.
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"container suite not yet in make test; `make containers` ({OPT_IN_ENV}=1)"
                    )
                )


@pytest.fixture(scope="package")
def image_archives() -> dict[str, Path]:
    return build_images()


@pytest.fixture(scope="package")
def control_plane() -> Iterator[ControlPlane]:
    with started_control_plane("sd-container-plane-", pod_reachable_ips=(GATEWAY,)) as plane:
        yield plane


@pytest.fixture(scope="package")
def api_client(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with admin_client(control_plane) as api:
        yield api


@pytest.fixture(scope="package")
def node(control_plane: ControlPlane, image_archives: dict[str, Path]) -> Iterator[ContainerNode]:
    workdir = Path(tempfile.mkdtemp(prefix="sd-container-node-"))
    container_node = ContainerNode(control_plane, workdir)
    container_node.start()
    try:
        for name, archive in image_archives.items():
            container_node.import_image(archive, IMAGE_NAMES[name])
        yield container_node
    finally:
        container_node.stop()
        if not os.environ.get(KEEP_ENV):
            with contextlib.suppress(OSError):
                shutil.rmtree(workdir)


@pytest.fixture(scope="package")
def crd_installed(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/sustainsearches.sustaindiffusion.io"
    )
