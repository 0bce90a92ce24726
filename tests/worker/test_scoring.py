"""Scoring formulas on hand-computed cases, the answer mapping, and the real tiny VQA/CLIP models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sustaindiffusion.worker.answer_groups import ethnic_group_of, gender_of
from sustaindiffusion.worker.scoring import (
    HUMAN_QUESTION,
    BlipVqa,
    ClipScore,
    DetectorConfidence,
    ethnic_bias,
    gender_bias,
    human_mask,
    load_quality_scorer,
    rgb,
)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["female"] * 5 + ["male"] * 5, 0.0),  # parity
        (["male"] * 10, 1.0),  # one gender
        (["female"] * 7 + ["male"] * 3, 0.4),  # |0.7 - 0.5| + |0.3 - 0.5|
        (["woman"] * 4 + ["man"] * 4 + ["unknown", "robot"], 0.2),  # |0.4 - 0.5| + |0.4 - 0.5|
        (["nothing"] * 4, 1.0),  # F = M = 0: |0 - 0.5| + |0 - 0.5|
    ],
)
def test_gender_bias(answers: list[str], expected: float) -> None:
    assert gender_bias(answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["white", "asian", "black", "arab"] * 3, 0.0),  # balanced
        (["caucasian"] * 8, 1.0),  # one group: 1 - 0
        (
            ["white"] * 4 + ["indian"] * 2 + ["african american"] * 2 + ["middle eastern"] * 2,
            0.2,
        ),  # 0.4 - 0.2
        (["hispanic", "german", "asian", "arab", "unknown"], 0.4),  # white 2/5, black 0
    ],
)
def test_ethnic_bias(answers: list[str], expected: float) -> None:
    assert ethnic_bias(answers) == pytest.approx(expected)


def test_bias_needs_images() -> None:
    with pytest.raises(ValueError, match="at least one image"):
        gender_bias([])
    with pytest.raises(ValueError, match="at least one image"):
        ethnic_bias([])


def test_answer_mapping_is_tolerant_of_case_and_punctuation() -> None:
    assert gender_of(" Female. ") == "female"
    assert gender_of("MAN") == "male"
    assert gender_of("person") is None
    assert ethnic_group_of("African  American") == "black"
    assert ethnic_group_of("Middle Eastern") == "arab"
    assert ethnic_group_of("martian") is None
    assert human_mask(["yes", "Yes.", "no", "maybe"]) == [True, True, False, False]


def test_images_reach_models_as_rgb() -> None:
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 255))
    gray = Image.new("L", (8, 8), 100)
    assert rgb(rgba).mode == "RGB"
    assert rgb(gray).mode == "RGB"
    assert np.asarray(rgb(rgba))[0, 0].tolist() == [10, 20, 30]


def _images(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)) for _ in range(count)]


def test_tiny_vqa_answers_do_not_depend_on_batching(tiny_models: Path) -> None:
    """Each image gets its own answer, the same in a batch of 2 as in one batch (no padding leaks)."""
    images = _images(3)
    in_pairs = BlipVqa(str(tiny_models / "blip-vqa"), None, "cpu", batch_size=2).answer(
        images, HUMAN_QUESTION
    )
    at_once = BlipVqa(str(tiny_models / "blip-vqa"), None, "cpu", batch_size=16).answer(
        images, HUMAN_QUESTION
    )
    alone = [
        BlipVqa(str(tiny_models / "blip-vqa"), None, "cpu").answer([i], HUMAN_QUESTION)[0] for i in images
    ]
    assert in_pairs == at_once == alone


def test_tiny_clip_scores_lie_in_unit_interval(tiny_models: Path) -> None:
    scorer = ClipScore(str(tiny_models / "clip"), None, "cpu", batch_size=2)
    scores = scorer.score(_images(3), ["a photo of a software engineer"] * 3)
    assert len(scores) == 3
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_tiny_detector_confidence_lies_in_unit_interval(tiny_models: Path) -> None:
    scorer = load_quality_scorer("DetectorConfidence", str(tiny_models / "detector"), None, "cpu")
    assert isinstance(scorer, DetectorConfidence)
    scores = scorer.score(_images(3), ["unused by a detector"] * 3)
    assert len(scores) == 3
    assert all(0.0 < s <= 1.0 for s in scores)


def test_the_spec_picks_the_quality_scorer(tiny_models: Path) -> None:
    assert isinstance(load_quality_scorer("ClipScore", str(tiny_models / "clip"), None, "cpu"), ClipScore)
