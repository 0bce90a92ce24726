"""Where a worker leaves a candidate's artifacts, and where readers (the report, the profile, the
audit) find them: one layout, written by the worker and read by the operator side.

Under the artifacts root, `generation-NNNN/<candidate id>/` per generation a candidate was
evaluated in, holding `candidate.json` and `images.jsonl` (later parts: `candidate-from-NNN.json`
and `images-from-NNN.jsonl`) and the images `pNNN-iNNN.png` (prompt index, image index)."""

from __future__ import annotations

from pathlib import Path

ALL_GENERATIONS = "generation-*"
GENERATION_PREFIX = "generation-"


def generation_directory(root: Path, generation: int) -> Path:
    return root / f"{GENERATION_PREFIX}{generation:04d}"


def candidate_directory(root: Path, generation: int, candidate_id: str) -> Path:
    return generation_directory(root, generation) / candidate_id


def generation_of(directory: Path) -> int:
    """The generation of a `candidate_directory`."""
    return int(directory.parent.name.removeprefix(GENERATION_PREFIX))


def image_name(prompt_index: int, image_index: int) -> str:
    return f"p{prompt_index:03d}-i{image_index:03d}.png"
