"""The supported Kubernetes versions (hack/versions.env): `make test` runs on one of them, the build
script builds any of them on request and refuses the others, and `make test-k8s` runs the
end-to-end suites on one of them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSIONS = REPO / "hack" / "versions.env"
BUILD = REPO / "hack" / "build-binaries.sh"
OVERRIDE_ENV = "SUSTAINDIFFUSION_KUBERNETES_VERSION"
# The suites of `make test` that run a control plane: `make test-k8s` runs each of them.
CONTROL_PLANE_SUITES = (
    "operator",
    "observability",
    "chaos",
    "runs",
    "kueue",
    "multikueue",
    "containers",
    "e2e",
)


def _versions() -> dict[str, str]:
    values = {}
    for line in VERSIONS.read_text().splitlines():
        match = re.fullmatch(r'([A-Z_]+)="?([^"]*)"?', line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


def _minor(version: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", version)
    assert match, f"not a release version: {version!r}"
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    """`make` in the repository, not as part of a running make (whose flags it would take)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _build(tmp_path: Path, *args: str, version: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != OVERRIDE_ENV}
    env["SUSTAINDIFFUSION_BIN_CACHE"] = str(tmp_path / "bin")  # never the real cache
    if version is not None:
        env[OVERRIDE_ENV] = version
    return subprocess.run(
        ["bash", str(BUILD), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_supported_range_holds_the_tested_version_and_spans_three_minors() -> None:
    versions = _versions()
    supported = versions["KUBERNETES_SUPPORTED"].split()
    assert versions["KUBERNETES_VERSION"] in supported
    parsed = [_minor(v) for v in supported]
    assert parsed == sorted(parsed), "oldest first"
    minors = {minor for _, minor, _ in parsed}
    assert {35, 36, 37} <= minors


def test_the_build_script_refuses_an_unsupported_version_and_names_the_supported(tmp_path: Path) -> None:
    refused = _build(tmp_path, "--print-dir", version="v1.34.0")
    assert refused.returncode == 2
    assert "v1.34.0 is not supported" in refused.stderr
    assert _versions()["KUBERNETES_SUPPORTED"] in refused.stderr
    assert refused.stdout == ""
    assert not (tmp_path / "bin").exists(), "nothing is created for a refused version"
    # A component named with it is refused just the same, before any build starts.
    assert _build(tmp_path, "control-plane", version="v1.34.0").returncode == 2


def test_the_override_keys_the_binaries_by_the_version_asked_for(tmp_path: Path) -> None:
    versions = _versions()
    default = _build(tmp_path, "--print-dir", version=None)
    assert default.returncode == 0, default.stderr
    assert f"current-{versions['KUBERNETES_VERSION']}-" in default.stdout.splitlines()[-1]
    for version in versions["KUBERNETES_SUPPORTED"].split():
        chosen = _build(tmp_path, "--print-dir", version=version)
        assert chosen.returncode == 0, chosen.stderr
        out_dir = Path(chosen.stdout.splitlines()[-1])
        assert out_dir.parent == tmp_path / "bin"
        assert out_dir.name.startswith(f"current-{version}-")
        assert (tmp_path / "bin" / f"kubernetes-{version}").is_dir()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_k8s_builds_the_version_and_runs_every_control_plane_suite() -> None:
    version = _versions()["KUBERNETES_SUPPORTED"].split()[-1]
    dry = _make("-n", "test-k8s", f"K8S={version}")
    assert dry.returncode == 0, dry.stderr
    commands = dry.stdout
    assert f"export SUSTAINDIFFUSION_KUBERNETES_VERSION={version};" in commands
    assert "for component in control-plane helm kueue kubelet; do" in commands
    assert f"hack/timed.sh {version}-go-$component bash hack/build-binaries.sh $component" in commands
    for suite in CONTROL_PLANE_SUITES:
        assert f"hack/timed.sh {version}-{suite} " in commands, suite
    assert commands.count('SUSTAINDIFFUSION_K8S_BIN_DIR="$bin_dir"') == len(CONTROL_PLANE_SUITES)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_k8s_refuses_a_missing_or_unsupported_version() -> None:
    supported = _versions()["KUBERNETES_SUPPORTED"]
    for args in ([], ["K8S=v1.34.0"]):
        refused = _make("test-k8s", *args)
        assert refused.returncode == 2
        assert f"supported: {supported}" in refused.stderr
