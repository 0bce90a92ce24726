"""What the control plane's binaries are: make builds helm after them (bin-helm), and the suites that
start as soon as the control plane is built must not wait for it or fail on its absence."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.controlplane import Binaries

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


def _executables(directory: Path, names: tuple[str, ...]) -> None:
    for name in names:
        (directory / name).write_text("#!/bin/sh\n")
        os.chmod(directory / name, 0o755)


def test_a_binaries_directory_without_helm_serves_a_control_plane(tmp_path: Path) -> None:
    _executables(tmp_path, CONTROL_PLANE)
    binaries = Binaries.from_dir(tmp_path)
    assert binaries.kube_apiserver == tmp_path / "kube-apiserver"
    assert not binaries.helm.exists()


@pytest.mark.parametrize("absent", CONTROL_PLANE)
def test_a_missing_control_plane_binary_is_named(tmp_path: Path, absent: str) -> None:
    _executables(tmp_path, tuple(name for name in CONTROL_PLANE if name != absent))
    with pytest.raises(FileNotFoundError, match=f"/{absent}"):
        Binaries.from_dir(tmp_path)
