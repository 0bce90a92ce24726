"""An image cache as one OCI layout directory per image: blobs stored once by digest, one tag per
input hash. Python's standard library only (hack/build-images.sh runs it with the system python3).

    python3 hack/oci_layout.py prune LAYOUT --keep 2
        drop all but the newest KEEP tags, and every blob no kept manifest references
    python3 hack/oci_layout.py archive LAYOUT TAG --name REF [--without DIGEST ...] OUT|-
        write the tagged image as an OCI archive whose index names it REF; blobs named with
        --without are left out (a thin archive for a store that holds them already); - is stdout

A project change adds one small layer blob beside the dependency layers the layout already holds,
so neither the cache nor an import of a thin archive rewrites the several-GB dependency layers.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

REF_NAME = "org.opencontainers.image.ref.name"


def _index(layout: Path) -> dict[str, Any]:
    index: dict[str, Any] = json.loads((layout / "index.json").read_text())
    return index


def _blob(layout: Path, digest: str) -> Path:
    algorithm, _, hexadecimal = digest.partition(":")
    return layout / "blobs" / algorithm / hexadecimal


def _descriptor(layout: Path, tag: str) -> dict[str, Any]:
    for descriptor in _index(layout)["manifests"]:
        if descriptor.get("annotations", {}).get(REF_NAME) == tag:
            return dict(descriptor)
    raise SystemExit(f"oci_layout: {layout} has no image tagged {tag!r}")


def referenced(layout: Path, manifest_digest: str) -> list[str]:
    """The manifest's digest, its config's and its layers', in that order."""
    manifest = json.loads(_blob(layout, manifest_digest).read_text())
    return [manifest_digest, manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]


def prune(layout: Path, keep: int) -> None:
    index = _index(layout)
    manifests = index["manifests"][-keep:]  # skopeo appends a new tag at the end
    index["manifests"] = manifests
    temporary = layout / "index.json.tmp"
    temporary.write_text(json.dumps(index))
    temporary.replace(layout / "index.json")
    wanted = {digest for m in manifests for digest in referenced(layout, m["digest"])}
    for blob in (layout / "blobs").glob("*/*"):
        if f"{blob.parent.name}:{blob.name}" not in wanted:
            blob.unlink()


def archive(layout: Path, tag: str, name: str, without: set[str], out: BinaryIO) -> None:
    descriptor = _descriptor(layout, tag)
    descriptor["annotations"] = {REF_NAME: name}
    with tarfile.open(fileobj=out, mode="w|") as tar:

        def add_bytes(path: str, data: bytes) -> None:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

        add_bytes("oci-layout", (layout / "oci-layout").read_bytes())
        add_bytes("index.json", json.dumps({"schemaVersion": 2, "manifests": [descriptor]}).encode())
        for digest in referenced(layout, descriptor["digest"]):
            if digest not in without:
                blob = _blob(layout, digest)
                tar.add(blob, arcname=str(blob.relative_to(layout)), recursive=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pruning = commands.add_parser("prune")
    pruning.add_argument("layout", type=Path)
    pruning.add_argument("--keep", type=int, default=2)
    archiving = commands.add_parser("archive")
    archiving.add_argument("layout", type=Path)
    archiving.add_argument("tag")
    archiving.add_argument("out")
    archiving.add_argument("--name", required=True, help="the image reference the archive's index names")
    archiving.add_argument("--without", nargs="*", default=[], help="digests to leave out")
    args = parser.parse_args(argv)
    if args.command == "prune":
        prune(args.layout, max(1, args.keep))
    elif args.out == "-":
        archive(args.layout, args.tag, args.name, set(args.without), sys.stdout.buffer)
    else:
        temporary = Path(f"{args.out}.tmp")
        with temporary.open("wb") as out:
            archive(args.layout, args.tag, args.name, set(args.without), out)
        temporary.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
