"""The container suite: a control plane of its own whose one node is a real kubelet with containerd
(tests/support/node.py), running the project's images built by hack/build-images.sh."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from sustaindiffusion.api.crd import CRD_PATH
from tests.support.controlplane import ControlPlane
from tests.support.environment import admin_client, started_container_node, started_control_plane
from tests.support.images import IMAGE_NAMES, BuiltImage, build_images
from tests.support.node import GATEWAY, ContainerNode


@pytest.fixture(scope="package")
def built_images() -> dict[str, BuiltImage]:
    started = time.monotonic()
    images = build_images()
    print(f"\nimages built or reused in {time.monotonic() - started:.1f} s")  # shown with -s
    return images


@pytest.fixture(scope="package")
def control_plane() -> Iterator[ControlPlane]:
    with started_control_plane("sd-container-plane-", pod_reachable_ips=(GATEWAY,)) as plane:
        yield plane


@pytest.fixture(scope="package")
def api_client(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with admin_client(control_plane) as api:
        yield api


@pytest.fixture(scope="package")
def node(control_plane: ControlPlane, built_images: dict[str, BuiltImage]) -> Iterator[ContainerNode]:
    with started_container_node(control_plane, "sd-container-node-") as container_node:
        for name, image in built_images.items():
            seconds = container_node.import_image(image, IMAGE_NAMES[name])
            print(f"{name} image imported into containerd in {seconds:.1f} s (0: held already)")
        stale = container_node.prune_images(IMAGE_NAMES[name] for name in built_images)
        print(f"stale images removed from containerd's cache: {stale or 'none'}")
        yield container_node


@pytest.fixture(scope="package")
def crd_installed(control_plane: ControlPlane) -> None:
    control_plane.install_crds(CRD_PATH)
