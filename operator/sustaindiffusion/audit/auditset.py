"""An audit set on disk: what the labeller sees, and what only the score reads.

    AUDIT_DIR/manifest.json         the run it came from, how it was drawn, and per item its image and
                                    the image's sha256: all the labelling page reads
    AUDIT_DIR/manifest.sha256       the manifest's own sha256 (a changed manifest is refused)
    AUDIT_DIR/images/<item>.png     the sampled images, copied
    AUDIT_DIR/detector/answers.json the detector's answers per item, and each point's stratum sizes:
                                    never read by the page; its sha256 is in the manifest
    AUDIT_DIR/labels/<annotator>.json  each annotator's answers (`labels`)
    AUDIT_DIR/score.json            the result of `sustaindiffusion audit score` (`score`)

Item ids are opaque (img-0001, ...) and in a shuffled order, so neither the ids, the order nor the
file names tell the detector's answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sustaindiffusion.audit.sample import Sample

FORMAT = 1
ITEM_ID = re.compile(r"^img-[0-9]{4,9}$")


class AuditSetError(ValueError):
    """The audit set is missing, malformed or changed since export: the message says which file."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Item(Strict):
    id: str = Field(pattern=ITEM_ID.pattern)
    image: str = Field(pattern=r"^images/img-[0-9]{4,9}\.png$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class RunIdentity(Strict):
    search: str
    directory: str  # a local run's directory, or where a cluster search's artifacts are
    spec_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    namespace: str | None = None  # set for a search in a cluster
    uid: str | None = None  # the cluster search's uid: a search made again under its name is another

    @property
    def in_cluster(self) -> bool:
        return self.namespace is not None


class Manifest(Strict):
    format: int
    created_at: float
    run: RunIdentity
    seed: int
    per_stratum: int = Field(ge=1)
    items: list[Item] = Field(min_length=1)
    detector_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    def item(self, item_id: str) -> Item | None:
        return next((item for item in self.items if item.id == item_id), None)


class DetectorItem(Strict):
    candidate_id: str
    role: str
    generation: int
    prompt_index: int
    image_index: int
    seed: int
    source: str  # the image's path in the run directory
    stratum: str
    human: bool
    gender: str  # in the scheme's words
    ethnicity: str
    gender_answer: str  # as the VQA model answered
    ethnicity_answer: str


class DetectorPoint(Strict):
    candidate_id: str
    role: str
    strata: dict[str, int]  # each stratum's size among the point's images


class DetectorAnswers(Strict):
    format: int
    person_gate: bool  # whether the human filter ran (off: every image counted as a person)
    points: list[DetectorPoint]
    items: dict[str, DetectorItem]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_durably(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def spec_digest(run_directory: Path) -> str:
    return sha256_of(run_directory / "spec.json")


def spec_document_digest(spec: dict[str, Any]) -> str:
    """A cluster search's spec (as the API returns it), in a canonical form."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write(
    target: Path,
    sample: Sample,
    run: RunIdentity,
    seed: int,
    per_stratum: int,
    person_gate: bool,
    source_of: Callable[[Path], str] = str,
) -> Manifest:
    """Write `sample` as an audit set into `target`, which must not exist or be empty: an audit set
    is never overwritten (its labels would no longer match its images). `source_of` names where
    each image came from (its path here, or on a cluster's claim when it was copied out)."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise AuditSetError(
            f"{target} already exists and is not empty: an audit set is never overwritten (labels may "
            "be in it); choose another --out"
        )
    (target / "images").mkdir(parents=True, exist_ok=True)
    items = []
    for drawn in sample.items:
        copy = target / "images" / f"{drawn.item_id}.png"
        shutil.copyfile(drawn.image.path, copy)
        items.append(Item(id=drawn.item_id, image=f"images/{copy.name}", sha256=sha256_of(copy)))
    detector = DetectorAnswers(
        format=FORMAT,
        person_gate=person_gate,
        points=[
            DetectorPoint(candidate_id=candidate, role=sample.roles[candidate], strata=strata)
            for candidate, strata in sample.strata.items()
        ],
        items={
            drawn.item_id: DetectorItem(
                candidate_id=drawn.image.candidate_id,
                role=drawn.role,
                generation=drawn.image.generation,
                prompt_index=drawn.image.prompt_index,
                image_index=drawn.image.image_index,
                seed=drawn.image.seed,
                source=source_of(drawn.image.path),
                stratum=drawn.image.stratum,
                human=drawn.image.human,
                gender=drawn.image.gender,
                ethnicity=drawn.image.ethnicity,
                gender_answer=drawn.image.gender_answer,
                ethnicity_answer=drawn.image.ethnicity_answer,
            )
            for drawn in sample.items
        },
    )
    detector_path = target / "detector" / "answers.json"
    _write_durably(detector_path, detector.model_dump_json(indent=1).encode())
    manifest = Manifest(
        format=FORMAT,
        created_at=time.time(),
        run=run,
        seed=seed,
        per_stratum=per_stratum,
        items=items,
        detector_sha256=sha256_of(detector_path),
    )
    data = manifest.model_dump_json(indent=1).encode()
    _write_durably(target / "manifest.json", data)
    _write_durably(target / "manifest.sha256", (hashlib.sha256(data).hexdigest() + "\n").encode())
    (target / "labels").mkdir(exist_ok=True)
    return manifest


def _problem(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def load_manifest(directory: Path) -> Manifest:
    """The manifest, checked against its recorded sha256 and its own rules (no image checked)."""
    path = directory / "manifest.json"
    if not path.is_file():
        raise AuditSetError(
            f"{directory} is not an audit set (no manifest.json); `sustaindiffusion audit export` writes one"
        )
    data = path.read_bytes()
    try:
        recorded = (directory / "manifest.sha256").read_text().strip()
    except OSError:
        raise AuditSetError(
            f"{directory / 'manifest.sha256'} is missing: the manifest cannot be checked"
        ) from None
    if hashlib.sha256(data).hexdigest() != recorded:
        raise AuditSetError(
            f"{path} was changed after export (its sha256 does not match manifest.sha256): the set "
            "cannot be trusted; export it again"
        )
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as error:
        raise AuditSetError(f"{path} is not an audit manifest ({_problem(error)})") from None
    if manifest.format != FORMAT:
        raise AuditSetError(f"{path} has format {manifest.format}; this version reads format {FORMAT}")
    ids = [item.id for item in manifest.items]
    if len(set(ids)) != len(ids):
        raise AuditSetError(f"{path} lists an item twice")
    if any(item.image != f"images/{item.id}.png" for item in manifest.items):
        raise AuditSetError(f"{path}: an item's image is not images/<its id>.png")
    return manifest


def verify(directory: Path) -> Manifest:
    """The manifest, once every image matches its recorded sha256."""
    manifest = load_manifest(directory)
    for item in manifest.items:
        image = directory / item.image
        if not image.is_file():
            raise AuditSetError(f"{image} is missing (listed in the manifest as item {item.id})")
        if sha256_of(image) != item.sha256:
            raise AuditSetError(
                f"{image} was changed after export (its sha256 does not match the manifest): the set "
                "cannot be trusted; export it again"
            )
    return manifest


def load_detector(directory: Path, manifest: Manifest) -> DetectorAnswers:
    """The detector's answers, checked against the manifest's sha256 (for the score only)."""
    path = directory / "detector" / "answers.json"
    if not path.is_file():
        raise AuditSetError(f"{path} is missing: the detector's answers are needed to score")
    if sha256_of(path) != manifest.detector_sha256:
        raise AuditSetError(f"{path} was changed after export (its sha256 does not match the manifest)")
    try:
        detector = DetectorAnswers.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise AuditSetError(f"{path} is not the detector's answers ({_problem(error)})") from None
    if set(detector.items) != {item.id for item in manifest.items}:
        raise AuditSetError(f"{path} does not answer for exactly the manifest's items")
    return detector
