"""The evaluation archive in ConfigMaps owned by the search: `<search>-archive-00000`, `-00001`, ...

Each chunk holds JSON lines (`sustaindiffusion.search.records`) up to a byte budget far below
etcd's object limit, so the archive scales to tens of thousands of evaluations while `.status`
stays small. Only chunks owned by the search's uid are read: a search deleted and created again
under the same name starts afresh. Nothing here is pickled: a record is plain JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubernetes import client

from sustaindiffusion.kube import names
from sustaindiffusion.kube.builders import ARCHIVE_KEY, SearchRef, archive_config_map
from sustaindiffusion.search.records import ArchiveRecord, parse_lines

CHUNK_BYTES = 256 * 1024


def append_lines(
    existing: str, records: Sequence[ArchiveRecord], chunk_bytes: int = CHUNK_BYTES
) -> tuple[str, list[ArchiveRecord]]:
    """Add records to a chunk while it stays within `chunk_bytes`; returns the chunk and the rest."""
    lines, size = [existing], len(existing.encode())
    for index, record in enumerate(records):
        line = record.to_line() + "\n"
        if size and size + len(line.encode()) > chunk_bytes:
            return "".join(lines), list(records[index:])
        lines.append(line)
        size += len(line.encode())
    return "".join(lines), []


def read_chunks(core: client.CoreV1Api, search: SearchRef) -> list[tuple[str, str]]:
    """The archive ConfigMaps of a search, as (name, text) in order, owned by its uid."""
    selector = names.selector(search.name, names.COMPONENT_ARCHIVE)
    listing = core.list_namespaced_config_map(search.namespace, label_selector=selector)
    chunks = []
    for item in listing.items:
        config_map: dict[str, Any] = core.api_client.sanitize_for_serialization(item)
        owners = config_map["metadata"].get("ownerReferences") or []
        if any(owner.get("uid") == search.uid for owner in owners):
            chunks.append(
                (config_map["metadata"]["name"], (config_map.get("data") or {}).get(ARCHIVE_KEY, ""))
            )
    return sorted(chunks)


def read_records(core: client.CoreV1Api, search: SearchRef) -> list[ArchiveRecord]:
    return [record for _, text in read_chunks(core, search) for record in parse_lines(text)]


class ConfigMapArchive:
    """The `Archive` of the generation loop, in ConfigMap chunks."""

    def __init__(self, core: client.CoreV1Api, search: SearchRef, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.core, self.search, self.chunk_bytes = core, search, chunk_bytes
        self._chunks: list[tuple[str, str]] = []  # (ConfigMap name, text), in order

    def read(self) -> list[ArchiveRecord]:
        self._chunks = read_chunks(self.core, self.search)
        return [record for _, text in self._chunks for record in parse_lines(text)]

    def append(self, records: Sequence[ArchiveRecord]) -> None:
        remaining = list(records)
        while remaining:
            if self._chunks:
                name, text = self._chunks[-1]
                updated, remaining = append_lines(text, remaining, self.chunk_bytes)
                if updated != text:
                    self.core.patch_namespaced_config_map(
                        name, self.search.namespace, {"data": {ARCHIVE_KEY: updated}}
                    )
                    self._chunks[-1] = (name, updated)
                    continue
            text, remaining = append_lines("", remaining, self.chunk_bytes)
            manifest: Any = archive_config_map(self.search, len(self._chunks), text)
            self.core.create_namespaced_config_map(self.search.namespace, manifest)
            self._chunks.append((manifest["metadata"]["name"], text))
