"""One annotator's labels of an audit set, saved atomically after every answer.

The file `labels/<annotator>.json` holds the answers in the order given: each answer is one
question about one image (`scheme`), so a page reloaded, or a server killed and started again,
resumes at the very question it was on, and undo takes back the last answer. Every change is
written to a temporary file, fsync'd, and renamed over the old one (then the folder is fsync'd):
a killed server leaves either the old file or the new, never half of one.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sustaindiffusion.audit.auditset import Manifest
from sustaindiffusion.audit.scheme import BY_FIELD, next_field

FORMAT = 1
ANNOTATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class LabelError(ValueError):
    """An answer that cannot be taken; `status` is the HTTP status the page answers with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    item: str
    field: str
    value: str
    at: float


class LabelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: int
    annotator: str
    manifest_sha256: str
    answers: list[Answer] = Field(default_factory=list)


def check_annotator(annotator: str) -> str:
    if not ANNOTATOR.match(annotator):
        raise ValueError(
            f"annotator id {annotator!r}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return annotator


def labels_path(directory: Path, annotator: str) -> Path:
    return directory / "labels" / f"{check_annotator(annotator)}.json"


def fold(answers: list[Answer]) -> dict[str, dict[str, str]]:
    """Each item's answers so far: field -> value."""
    labels: dict[str, dict[str, str]] = {}
    for answer in answers:
        labels.setdefault(answer.item, {})[answer.field] = answer.value
    return labels


def check_answer(
    manifest: Manifest, labels: dict[str, dict[str, str]], item: str, field: str, value: str
) -> None:
    """Raise a LabelError unless `value` answers `field` of `item`, the question that image is at."""
    if manifest.item(item) is None:
        raise LabelError(f"unknown image id {item!r}: not in this audit set", 404)
    question = BY_FIELD.get(field)
    if question is None:
        raise LabelError(f"unknown question {field!r}: the questions are {', '.join(BY_FIELD)}", 422)
    if value not in question.values:
        raise LabelError(
            f"{value!r} is not an answer to {field!r}: the answers are {', '.join(question.values)}", 422
        )
    expected = next_field(labels.get(item, {}))
    if expected != field:
        where = "is complete" if expected is None else f"is at the question {expected!r}"
        raise LabelError(f"image {item} {where}, not {field!r}: reload the page", 409)


def read(directory: Path, annotator: str, manifest: Manifest, manifest_sha256: str) -> LabelFile:
    """An annotator's label file (an empty one if there is none yet), checked answer by answer."""
    path = labels_path(directory, annotator)
    if not path.exists():
        return LabelFile(format=FORMAT, annotator=annotator, manifest_sha256=manifest_sha256)
    try:
        document = LabelFile.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise LabelError(f"{path} is not a label file ({str(error).splitlines()[0]})", 500) from None
    if document.annotator != annotator or document.manifest_sha256 != manifest_sha256:
        raise LabelError(f"{path} belongs to another annotator or another audit set", 500)
    labels: dict[str, dict[str, str]] = {}
    for number, answer in enumerate(document.answers, 1):
        try:
            check_answer(manifest, labels, answer.item, answer.field, answer.value)
        except LabelError as error:
            raise LabelError(f"{path}: answer {number}: {error}", 500) from None
        labels.setdefault(answer.item, {})[answer.field] = answer.value
    return document


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class LabelStore:
    """An annotator's labels, kept on disk after every change; safe for concurrent requests."""

    def __init__(self, directory: Path, annotator: str, manifest: Manifest, manifest_sha256: str) -> None:
        self.path = labels_path(directory, annotator)
        self.manifest = manifest
        self._lock = threading.Lock()
        self._document = read(directory, annotator, manifest, manifest_sha256)

    @property
    def answers(self) -> list[Answer]:
        return list(self._document.answers)

    def labels(self) -> dict[str, dict[str, str]]:
        return fold(self._document.answers)

    def current(self) -> tuple[str, str] | None:
        """The image and question to answer next, in the manifest's order (None: all done)."""
        labels = self.labels()
        for item in self.manifest.items:
            field = next_field(labels.get(item.id, {}))
            if field is not None:
                return item.id, field
        return None

    def complete(self) -> int:
        labels = self.labels()
        return sum(
            1 for item in self.manifest.items if item.id in labels and next_field(labels[item.id]) is None
        )

    def answer(self, item: str, field: str, value: str) -> None:
        with self._lock:
            check_answer(self.manifest, self.labels(), item, field, value)
            current = self.current()
            if current != (item, field):
                raise LabelError(f"image {item} is not the one being labelled: reload the page", 409)
            self._save([*self._document.answers, Answer(item=item, field=field, value=value, at=time.time())])

    def undo(self) -> Answer:
        with self._lock:
            if not self._document.answers:
                raise LabelError("nothing to undo: no answer given yet", 409)
            last = self._document.answers[-1]
            self._save(self._document.answers[:-1])
            return last

    def _save(self, answers: list[Answer]) -> None:
        document = self._document.model_copy(update={"answers": answers})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, document.model_dump_json(indent=1).encode())
        self._document = document  # only once it is on disk
