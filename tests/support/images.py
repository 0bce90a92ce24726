"""The project's container images, built (or reused) by hack/build-images.sh into its cache: one OCI
layout directory per image, tagged by input hash (`--layout`: no archive is written)."""

from __future__ import annotations

import json
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tests.support.controlplane import REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-images.sh"
LAYOUT_TOOL = REPO_ROOT / "hack" / "oci_layout.py"
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
# The names the images carry: the chart's defaults (sustaindiffusion/operator at the chart's
# appVersion, worker.image), fully qualified as a container runtime resolves them.
IMAGE_NAMES = {
    "operator": f"docker.io/sustaindiffusion/operator:{VERSION}",
    "worker": f"docker.io/sustaindiffusion/worker:{VERSION}",
}
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class BuiltImage:
    """An image in the build cache: its OCI layout directory and tag."""

    layout: Path
    tag: str

    def manifest_digest(self) -> str:
        index = json.loads((self.layout / "index.json").read_text())
        for descriptor in index["manifests"]:
            if descriptor.get("annotations", {}).get(REF_NAME) == self.tag:
                digest: str = descriptor["digest"]
                return digest
        raise ValueError(f"{self.layout} has no image tagged {self.tag}")

    def blobs(self) -> list[str]:
        """The digests of its manifest, config and layers."""
        manifest_digest = self.manifest_digest()
        manifest = json.loads((self.layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_text())
        return [
            manifest_digest,
            manifest["config"]["digest"],
            *(layer["digest"] for layer in manifest["layers"]),
        ]

    def archive_command(self, name: str, without: set[str]) -> list[str]:
        """A command that writes the image, named `name`, as an OCI archive to stdout, leaving out
        the blobs in `without` (those the importing store holds already)."""
        return [
            "python3", str(LAYOUT_TOOL), "archive", str(self.layout), self.tag, "-",
            "--name", name, "--without", *sorted(without),
        ]  # fmt: skip


def build_images(*names: str) -> dict[str, BuiltImage]:
    """Image name (operator, worker) → where its build is cached; the script reuses an image whose
    inputs are unchanged, so a warm call takes about a second."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--layout", *names],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,  # a fresh machine builds the worker's dependency layer (torch): minutes
    )
    if result.returncode != 0:
        raise RuntimeError(f"hack/build-images.sh failed ({result.returncode}):\n{result.stderr[-4000:]}")
    images = {}
    for line in result.stdout.splitlines():
        name, sep, reference = line.partition("=")
        if sep and name in IMAGE_NAMES and reference.startswith("oci:"):
            layout, _, tag = reference.removeprefix("oci:").rpartition(":")
            images[name] = BuiltImage(Path(layout), tag)
    missing = set(names or IMAGE_NAMES) - images.keys()
    if missing:
        raise RuntimeError(f"hack/build-images.sh printed no image for {sorted(missing)}:\n{result.stdout}")
    return images
