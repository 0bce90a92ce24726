"""Audit sets built by hand: a run directory's artifacts as the worker writes them, with images
and detector answers chosen by the test, so what the audit must find is known."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.validation import load_manifest
from sustaindiffusion.audit import auditset
from sustaindiffusion.audit.sample import draw
from sustaindiffusion.audit.source import Point, images_of

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"

# One image's detector answers: (person gate, gender answer, ethnicity answer), as the VQA model says.
Answers = tuple[bool, str, str]


def spec() -> SustainSearchSpec:
    return load_manifest(QUICKSTART).spec


def write_candidate(
    run: Path,
    generation: int,
    candidate: str,
    answers: Sequence[Answers],
    first_image: int = 0,
    part: str = "",
) -> None:
    """A candidate's images as the worker saves them: records, and one PNG per image (a colour of its own)."""
    directory = run / "artifacts" / f"generation-{generation:04d}" / candidate
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f"images{part}.jsonl").open("w") as handle:
        for number, (human, gender, ethnicity) in enumerate(answers, first_image):
            record = {
                "prompt_index": 0,
                "image_index": number,
                "seed": 1000 + number,
                "attempt": 0,
                "human": human,
                "gender_answer": gender,
                "ethnicity_answer": ethnicity,
                "quality": 0.5,
            }
            handle.write(json.dumps(record) + "\n")
            colour = (number * 37 % 256, len(candidate) * 11 % 256, generation * 90 % 256)
            Image.new("RGB", (16, 16), colour).save(directory / f"p000-i{number:03d}.png")


def write_task(run: Path, generation: int, candidates: Sequence[str], seed_stream: str = "") -> None:
    (run / "tasks").mkdir(parents=True, exist_ok=True)
    task = {
        "generation": generation,
        "seedStream": seed_stream,
        "candidates": [{"candidateId": c} for c in candidates],
    }
    (run / "tasks" / f"g{generation:04d}.json").write_text(json.dumps(task))


def make_run(run: Path, points: dict[str, Sequence[Answers]]) -> list[Point]:
    """A run directory whose generation 0 holds `points` (the first one: the defaults)."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "spec.json").write_text(json.dumps({"name": "hand-made", "spec": {}}))
    for candidate, answers in points.items():
        write_candidate(run, 0, candidate, answers)
    write_task(run, 0, list(points))
    return [Point(c, "defaults" if i == 0 else "front") for i, c in enumerate(points)]


def export(
    run: Path, points: list[Point], target: Path, per_stratum: int = 10, seed: int = 0
) -> auditset.Manifest:
    sample = draw(images_of(run, spec(), points), per_stratum, seed)
    identity = auditset.RunIdentity(
        search="hand-made", directory=str(run), spec_sha256=auditset.spec_digest(run)
    )
    return auditset.write(target, sample, identity, seed, per_stratum, person_gate=True)
