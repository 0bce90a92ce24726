"""A local search's output directory: the source of truth for resuming and for reports.

DIR/spec.json        the validated spec (checked on resume)
DIR/archive.jsonl    every result, in the order told to the engine (`search.records`, fsync'd)
DIR/status.json      the latest status, as the operator would write it
DIR/tasks/           the task of each generation
DIR/reports/         each worker run's report (what a pod's termination message holds), exit code, log
DIR/artifacts/       per-image records and images
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sustaindiffusion.api.rules import STORED
from sustaindiffusion.api.spec import IMMUTABLE_ALGORITHM_FIELDS, IMMUTABLE_SPEC_FIELDS, SustainSearchSpec
from sustaindiffusion.search.records import ArchiveRecord, RecordError


class StoreError(ValueError):
    pass


def _fixed_part(spec: dict[str, Any]) -> dict[str, Any]:
    """The fields that must not change for a search to resume (the CRD's immutable fields)."""
    fixed = {key: spec.get(key) for key in IMMUTABLE_SPEC_FIELDS}
    fixed["algorithm"] = {key: spec.get("algorithm", {}).get(key) for key in IMMUTABLE_ALGORITHM_FIELDS}
    return fixed


class RunStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.spec_path = directory / "spec.json"
        self.archive_path = directory / "archive.jsonl"
        self.status_path = directory / "status.json"
        self.tasks = directory / "tasks"
        self.reports = directory / "reports"
        self.artifacts = directory / "artifacts"
        self._keys: set[str] | None = None  # keys of the archived records, once read

    def exists(self) -> bool:
        return self.spec_path.exists()

    def open(self, spec: SustainSearchSpec, name: str) -> None:
        """Create the directory, or check that it holds this same search (for a resume)."""
        dumped = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        document = {"name": name, "spec": dumped}
        if self.exists():
            recorded = json.loads(self.spec_path.read_text())
            if _fixed_part(recorded["spec"]) != _fixed_part(dumped):
                raise StoreError(
                    f"{self.directory} holds a different search (its model, prompts, search space, "
                    "objectives, scoring or seed differ): choose another --out, or delete it to start over"
                )
        for folder in (self.directory, self.tasks, self.reports, self.artifacts):
            folder.mkdir(parents=True, exist_ok=True)
        self.spec_path.write_text(json.dumps(document, indent=2))

    def load_spec(self) -> tuple[str, SustainSearchSpec]:
        if not self.exists():
            raise StoreError(f"{self.directory} is not a search output directory (no spec.json)")
        try:
            document = json.loads(self.spec_path.read_text())
            return str(document["name"]), SustainSearchSpec.model_validate(document["spec"], context=STORED)
        except (json.JSONDecodeError, KeyError, TypeError, ValidationError) as error:
            problem = f"{type(error).__name__}: {error}".splitlines()[0]
            raise StoreError(
                f"{self.spec_path} is not a search's spec ({problem}); `sustaindiffusion run` writes it"
            ) from None

    def records(self) -> list[ArchiveRecord]:
        """The archive, in order. A last line cut short by a crash is dropped from the file (its
        result was never told, so its candidate is ingested again from its report)."""
        if not self.archive_path.exists():
            return []
        text = self.archive_path.read_text()
        complete, _, partial = text.rpartition("\n")
        if partial:
            with self.archive_path.open("r+") as handle:
                handle.truncate(len((complete + "\n").encode()) if complete else 0)
        records = []
        for number, line in enumerate(complete.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(ArchiveRecord.from_line(line))
            except RecordError as error:
                raise StoreError(f"{self.archive_path}:{number} is not an archive record: {error}") from None
        return records

    def read(self) -> list[ArchiveRecord]:
        records = self.records()
        self._keys = {record.key for record in records}
        return records

    def append(self, records: Sequence[ArchiveRecord]) -> None:
        """Append the records whose key the archive does not hold yet, and fsync."""
        if self._keys is None:
            self.read()
        assert self._keys is not None
        with self.archive_path.open("a") as handle:
            for record in records:
                if record.key in self._keys:
                    continue
                handle.write(record.to_line() + "\n")
                self._keys.add(record.key)
            handle.flush()
            os.fsync(handle.fileno())

    def previous_status(self) -> dict[str, Any]:
        try:
            status: dict[str, Any] = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}
        return status

    def write_status(self, status: dict[str, Any]) -> None:
        temporary = self.status_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(status, indent=2))
        temporary.replace(self.status_path)
