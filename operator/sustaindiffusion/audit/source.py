"""The saved images of a finished search's front points and defaults, with the detector's answers.

The worker writes, per candidate and generation, `artifacts/generation-NNNN/<candidate>/`:
`images.jsonl` (one record per image: prompt_index, image_index, seed, human, gender_answer,
ethnicity_answer, ...) and `pNNN-iNNN.png`; later parts of the same candidate (a screening's rest,
more evidence) are `images-from-NNN.jsonl` beside them or under a later generation. Held-out
validation writes the same candidates again under the generation of its task, whose
`seedStream` is set (DIR/tasks/gNNNN*.json): those images are not the search's and are left out,
so an audited point's images are exactly the ones its in-sample figures count.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sustaindiffusion.api.artifacts import ALL_GENERATIONS, candidate_directory, generation_of, image_name
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.audit.scheme import detector_ethnicity, detector_gender

NO_PERSON = "no-person"


class SourceError(ValueError):
    """The run cannot be audited (no images saved, records missing): the message says what to do."""


@dataclass(frozen=True)
class Point:
    """What an audit covers: a front point or the defaults."""

    candidate_id: str
    role: str  # "defaults" or "front"


@dataclass(frozen=True)
class SavedImage:
    candidate_id: str
    generation: int
    prompt_index: int
    image_index: int
    seed: int
    path: Path
    human: bool  # the detector's person gate (True for every image when the gate is off)
    gender_answer: str  # as the VQA model answered
    ethnicity_answer: str

    @property
    def gender(self) -> str:
        """The gender answer in the labelling scheme's words (woman / man / cant_tell)."""
        return detector_gender(self.gender_answer)

    @property
    def ethnicity(self) -> str:
        return detector_ethnicity(self.ethnicity_answer)

    @property
    def stratum(self) -> str:
        """The detector's answers as a stratum: one for every image the gate turned away (their
        gender and ethnicity answers count for nothing), else person/gender/ethnicity."""
        return f"person/{self.gender}/{self.ethnicity}" if self.human else NO_PERSON


@dataclass(frozen=True)
class PointImages:
    point: Point
    images: tuple[SavedImage, ...]


def validation_generations(run_directory: Path) -> dict[int, set[str]]:
    """Per generation, the candidates that a held-out validation task (seedStream set) evaluated."""
    held_out: dict[int, set[str]] = {}
    for path in sorted((run_directory / "tasks").glob("g*.json")):
        try:
            task = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if task.get("seedStream"):
            ids = {c.get("candidateId") for c in task.get("candidates", [])}
            held_out.setdefault(int(task["generation"]), set()).update(i for i in ids if i)
    return held_out


def _searched_generations(
    run_directory: Path, candidate_id: str, held_out: Mapping[int, Collection[str]]
) -> list[int]:
    found = []
    for directory in sorted((run_directory / "artifacts").glob(f"{ALL_GENERATIONS}/{candidate_id}")):
        generation = generation_of(directory)
        if candidate_id not in held_out.get(generation, set()):
            found.append(generation)
    return found


def saves_images(spec: SustainSearchSpec) -> bool:
    artifacts = spec.execution.artifacts
    return artifacts is None or artifacts.save_images


def images_of(
    run_directory: Path,
    spec: SustainSearchSpec,
    points: Sequence[Point],
    held_out: Mapping[int, Collection[str]] | None = None,
    saved: Callable[[Path], bool] = Path.is_file,
) -> list[PointImages]:
    """Every saved image of each point from the search itself (validation's left out).

    `held_out`: per generation, the candidates held-out validation evaluated (default: read from
    RUN_DIR/tasks); `saved`: whether an image file exists (default: on this disk; a claim in a
    cluster lists its files instead, and only the sampled ones are copied)."""
    if not saves_images(spec):
        raise SourceError(
            "this search did not save its images (spec.execution.artifacts.saveImages: false), so "
            "there is nothing for people to look at: set saveImages: true (the default) and run the "
            "search again (a new --out directory, or a new name in the cluster)"
        )
    if held_out is None:
        held_out = validation_generations(run_directory)
    found = []
    for point in points:
        images: dict[tuple[int, int], SavedImage] = {}
        for generation in _searched_generations(run_directory, point.candidate_id, held_out):
            directory = candidate_directory(run_directory / "artifacts", generation, point.candidate_id)
            for records in sorted(directory.glob("images*.jsonl")):
                for number, line in enumerate(records.read_text().splitlines(), 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        image = SavedImage(
                            candidate_id=point.candidate_id,
                            generation=generation,
                            prompt_index=int(record["prompt_index"]),
                            image_index=int(record["image_index"]),
                            seed=int(record["seed"]),
                            path=directory
                            / image_name(int(record["prompt_index"]), int(record["image_index"])),
                            human=bool(record["human"]),
                            gender_answer=str(record["gender_answer"]),
                            ethnicity_answer=str(record["ethnicity_answer"]),
                        )
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                        raise SourceError(
                            f"{records}:{number} is not an image record ({type(error).__name__}: {error})"
                        ) from None
                    images[(image.prompt_index, image.image_index)] = image
        if not images:
            raise SourceError(
                f"no image records for {point.role} point {point.candidate_id} under "
                f"{run_directory / 'artifacts'}: is this the search's output directory?"
            )
        missing = [image.path for image in images.values() if not saved(image.path)]
        if missing:
            raise SourceError(
                f"{len(missing)} of the {len(images)} images of {point.role} point {point.candidate_id} "
                f"were not saved (first: {missing[0]}); the search must save its images "
                "(spec.execution.artifacts.saveImages: true, the default) for an audit"
            )
        found.append(PointImages(point, tuple(images[key] for key in sorted(images))))
    return found
