"""The evaluation archive: every result of a search, in the order it was told to the engine.

It lives in ConfigMaps owned by the search (`<search>-archive-00000`, `-00001`, ...), each holding
JSON lines up to a byte budget far below etcd's object limit, so the archive scales to tens of
thousands of evaluations while `.status` stays small. Replaying it in order rebuilds the engine.
Nothing here is pickled: a record is plain JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.wire import ShardReport, decode_report, encode_report
from sustaindiffusion.operator import names

RECORDS_KEY = "records.jsonl"
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class ArchiveRecord:
    generation: int
    result: EvaluationResult

    def to_line(self) -> str:
        report = ShardReport(generation=self.generation, shard=0, results=[self.result])
        row = json.loads(encode_report(report, limit=1 << 20))["r"][0]
        return json.dumps({"g": self.generation, "r": row}, separators=(",", ":"))

    @classmethod
    def from_line(cls, line: str) -> ArchiveRecord:
        payload = json.loads(line)
        envelope = json.dumps({"v": 1, "g": payload["g"], "s": 0, "r": [payload["r"]]})
        return cls(generation=int(payload["g"]), result=decode_report(envelope).results[0])


def parse_chunk(text: str) -> list[ArchiveRecord]:
    return [ArchiveRecord.from_line(line) for line in text.splitlines() if line.strip()]


def append_lines(
    existing: str, records: list[ArchiveRecord], chunk_bytes: int = CHUNK_BYTES
) -> tuple[str, list[ArchiveRecord]]:
    """Add records to a chunk while it stays within `chunk_bytes`; returns the chunk and the rest."""
    lines, size = [existing], len(existing.encode())
    for index, record in enumerate(records):
        line = record.to_line() + "\n"
        if size and size + len(line.encode()) > chunk_bytes:
            return "".join(lines), records[index:]
        lines.append(line)
        size += len(line.encode())
    return "".join(lines), []


def read_archive(core: client.CoreV1Api, namespace: str, search: str, uid: str) -> list[tuple[str, str]]:
    """The archive ConfigMaps of a search, as (name, text) in order; only those owned by `uid`
    (a search deleted and created again under the same name starts afresh)."""
    selector = names.selector(search, names.COMPONENT_ARCHIVE)
    listing = core.list_namespaced_config_map(namespace, label_selector=selector)
    chunks = []
    for item in listing.items:
        config_map: dict[str, Any] = core.api_client.sanitize_for_serialization(item)
        owners = config_map["metadata"].get("ownerReferences") or []
        if any(owner.get("uid") == uid for owner in owners):
            chunks.append(
                (config_map["metadata"]["name"], (config_map.get("data") or {}).get(RECORDS_KEY, ""))
            )
    return sorted(chunks)
