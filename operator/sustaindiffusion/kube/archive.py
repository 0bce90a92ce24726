"""The evaluation archive in ConfigMaps owned by the search: `<search>-archive-00000`, `-00001`, ...

Each chunk holds JSON lines (`sustaindiffusion.search.records`) up to a byte budget far below
etcd's object limit, so the archive scales to tens of thousands of evaluations while `.status`
stays small. Only chunks owned by the search's uid are read: a search deleted and created again
under the same name starts afresh. Nothing here is pickled: a record is plain JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sustaindiffusion.kube import names
from sustaindiffusion.kube.api import read_json
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


@dataclass
class Chunk:
    name: str
    text: str
    resource_version: str
    keys: set[str] = field(default_factory=set)  # the keys of the records it holds


def read_chunks(core: client.CoreV1Api, search: SearchRef) -> list[Chunk]:
    """The archive ConfigMaps of a search, in order, owned by its uid."""
    selector = names.selector(search.name, names.COMPONENT_ARCHIVE)
    listing = read_json(core.list_namespaced_config_map, search.namespace, label_selector=selector)
    chunks = []
    for config_map in listing.get("items") or []:
        metadata = config_map["metadata"]
        if any(owner.get("uid") == search.uid for owner in metadata.get("ownerReferences") or []):
            text = (config_map.get("data") or {}).get(ARCHIVE_KEY, "")
            chunks.append(Chunk(metadata["name"], text, metadata["resourceVersion"]))
    return sorted(chunks, key=lambda chunk: chunk.name)


def read_records(core: client.CoreV1Api, search: SearchRef) -> list[ArchiveRecord]:
    return [record for chunk in read_chunks(core, search) for record in parse_lines(chunk.text)]


class ConfigMapArchive:
    """The `Archive` of the generation loop, in ConfigMap chunks, appended idempotently.

    A record whose key the archive holds already is not appended again, so a retried append (after
    a chunk was patched but the next could not be created, or a response was lost) adds only what is
    missing. Every write carries the chunk's resourceVersion: a concurrent writer makes it fail
    (409) instead of losing its records. After any failure the chunks are read again before the next
    append. A full chunk is marked immutable when the next one is created.
    """

    def __init__(self, core: client.CoreV1Api, search: SearchRef, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.core, self.search, self.chunk_bytes = core, search, chunk_bytes
        self._chunks: list[Chunk] | None = None  # None: read them before the next append

    def read(self) -> list[ArchiveRecord]:
        self._chunks = None
        chunks = read_chunks(self.core, self.search)
        records = []
        for chunk in chunks:
            parsed = parse_lines(chunk.text)
            chunk.keys = {record.key for record in parsed}
            records += parsed
        self._chunks = chunks
        return records

    def append(self, records: Sequence[ArchiveRecord]) -> None:
        try:
            self._append(records)
        except BaseException:
            self._chunks = None  # what was written is unknown: read it again first
            raise

    def _append(self, records: Sequence[ArchiveRecord]) -> None:
        if self._chunks is None:
            self.read()
        chunks = self._chunks
        assert chunks is not None
        known = set().union(*(chunk.keys for chunk in chunks))
        remaining: list[ArchiveRecord] = []
        for record in records:
            if record.key not in known:
                known.add(record.key)
                remaining.append(record)
        while remaining:
            if chunks:
                last = chunks[-1]
                updated, rest = append_lines(last.text, remaining, self.chunk_bytes)
                if updated != last.text:
                    body = {
                        "metadata": {"resourceVersion": last.resource_version},
                        "data": {ARCHIVE_KEY: updated},
                    }
                    patched = self.core.patch_namespaced_config_map(last.name, self.search.namespace, body)
                    last.keys |= {r.key for r in remaining[: len(remaining) - len(rest)]}
                    last.text, last.resource_version = updated, _resource_version(patched)
                    remaining = rest
                    continue
            text, rest = append_lines("", remaining, self.chunk_bytes)
            manifest: Any = archive_config_map(self.search, len(chunks), text)
            created = self._create(manifest)
            if chunks:  # the chunk before is full: nothing is ever appended to it again
                full = chunks[-1]
                immutable = {"metadata": {"resourceVersion": full.resource_version}, "immutable": True}
                self.core.patch_namespaced_config_map(full.name, self.search.namespace, immutable)
            keys = {r.key for r in remaining[: len(remaining) - len(rest)]}
            chunks.append(Chunk(manifest["metadata"]["name"], text, _resource_version(created), keys))
            remaining = rest

    def _create(self, manifest: Any) -> client.V1ConfigMap:
        """Create a chunk. A ConfigMap of that name owned by another uid is garbage of an earlier
        search of the same name: it is deleted, and the conflict raised so the step is retried."""
        try:
            return self.core.create_namespaced_config_map(self.search.namespace, manifest)
        except ApiException as error:
            if error.status == 409:
                name = manifest["metadata"]["name"]
                existing = self.core.read_namespaced_config_map(name, self.search.namespace)
                owners = (existing.metadata.owner_references if existing.metadata else None) or []
                if all(owner.uid != self.search.uid for owner in owners):
                    self.core.delete_namespaced_config_map(name, self.search.namespace)
            raise


def _resource_version(config_map: client.V1ConfigMap) -> str:
    return str(config_map.metadata.resource_version if config_map.metadata else "")
