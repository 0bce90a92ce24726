"""The Helm chart in tests: its path, `helm` against a control plane, a template rendered with
values, and values written to a file (the chart, admission and container suites share them)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.support.controlplane import REPO_ROOT, ControlPlane

CHART = REPO_ROOT / "charts" / "sustaindiffusion"


def helm(plane: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not os.access(plane.binaries.helm, os.X_OK):
        raise FileNotFoundError(f"helm missing: {plane.binaries.helm}; run hack/build-binaries.sh helm")
    return subprocess.run(
        [str(plane.binaries.helm), f"--kubeconfig={plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )


def render(plane: ControlPlane, values: Path, template: str, release: str = "sd") -> list[dict[str, Any]]:
    """The chart's documents from one template, rendered with `values`."""
    rendered = helm(plane, "template", release, str(CHART), "-f", str(values), "--show-only", template).stdout
    return [document for document in yaml.safe_load_all(rendered) if document]


def write_values(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path
