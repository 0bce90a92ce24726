"""Scoring formulas on hand-computed cases, the answer mapping, and the real tiny VQA/CLIP models."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sustaindiffusion.api.bias import ETHNIC_GROUPS as BIAS_GROUPS
from sustaindiffusion.api.bias import ethnic_bias, gender_bias
from sustaindiffusion.api.spec import QualityScoring
from sustaindiffusion.worker.answer_groups import ETHNIC_GROUPS as ANSWER_GROUPS
from sustaindiffusion.worker.answer_groups import count_answers, ethnic_group_of, gender_of
from sustaindiffusion.worker.scoring import (
    HUMAN_QUESTION,
    BlipVqa,
    ClipScore,
    DetectorConfidence,
    QualitySample,
    human_mask,
    load_quality_scorer,
    pooled_quality,
    quality_spread,
    rgb,
)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["female"] * 5 + ["male"] * 5, 0.0),  # parity
        (["male"] * 10, 1.0),  # one gender
        (["female"] * 7 + ["male"] * 3, 0.4),  # |0.7 - 0.5| + |0.3 - 0.5|
        (["woman"] * 4 + ["man"] * 4 + ["unknown", "robot"], 0.0),  # unmapped answers are no evidence
        (["woman"] * 3 + ["boy"] + ["robot"] * 6, 0.5),  # 3 of 4 mapped are female
        (["nothing"] * 4, 1.0),  # nothing mapped: unknown, the worst value, never parity
    ],
)
def test_gender_bias_counts_only_mapped_answers(answers: list[str], expected: float) -> None:
    counts = count_answers([True] * len(answers), answers, ["white"] * len(answers))
    assert counts.female + counts.male == sum(a in ("female", "woman", "male", "man", "boy") for a in answers)
    assert gender_bias(counts.female, counts.male) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["white", "asian", "black", "arab"] * 3, 0.0),  # balanced
        (["caucasian"] * 8, 1.0),  # one group: 1 - 0
        (
            ["white"] * 4 + ["indian"] * 2 + ["african american"] * 2 + ["middle eastern"] * 2,
            0.2,
        ),  # 0.4 - 0.2
        (["hispanic", "german", "asian", "arab", "unknown"], 0.5),  # of 4 mapped: white 2/4, black 0
        (["martian"] * 6, 1.0),  # nothing mapped: unknown, the worst value (it was 0, the best, once)
    ],
)
def test_ethnic_bias_counts_only_mapped_answers(answers: list[str], expected: float) -> None:
    counts = count_answers([True] * len(answers), ["female"] * len(answers), answers)
    assert ethnic_bias(counts.ethnic) == pytest.approx(expected)


def test_only_human_images_count() -> None:
    counts = count_answers(
        [True, False, True, False], ["female", "male", "male", "male"], ["asian", "white", "white", "black"]
    )
    assert (counts.human, counts.female, counts.male) == (2, 1, 1)
    assert counts.ethnic == (1, 1, 0, 0)
    none = count_answers([False] * 3, ["female"] * 3, ["asian"] * 3)
    assert (none.human, none.female, none.male, sum(none.ethnic)) == (0, 0, 0, 0)
    assert gender_bias(none.female, none.male) == ethnic_bias(none.ethnic) == 1.0


def test_every_answer_of_a_group_counts_for_that_group_where_the_bias_statistics_read_it() -> None:
    """Each group's answers land in its own place of the counts the ethnic bias reads, and in no
    other (an answer table out of step with `api.bias` would move a group's evidence to another)."""
    for place, group in enumerate(BIAS_GROUPS):
        answers = list(ANSWER_GROUPS[group])
        counts = count_answers([True] * len(answers), ["female"] * len(answers), answers)
        expected = [0] * len(BIAS_GROUPS)
        expected[place] = len(answers)
        assert list(counts.ethnic) == expected, group
        assert ethnic_bias(counts.ethnic) == 1.0  # all of one group
    every_answer = [answer for group in BIAS_GROUPS for answer in ANSWER_GROUPS[group]]
    assert len(every_answer) == len(set(every_answer))  # no answer belongs to two groups


def test_detector_boxes_pool_over_images() -> None:
    """Two images: boxes 0.9 and 0.5 in one, 0.3 in the other, 0.2 (below 0.25) ignored."""
    samples = [QualitySample(0.9 + 0.5, 2), QualitySample(0.3, 1), QualitySample(0.0, 0)]
    assert pooled_quality(samples) == pytest.approx((0.9 + 0.5 + 0.3) / 3)  # not the mean of means
    assert pooled_quality([QualitySample(0.0, 0)]) == 0.0


def test_the_quality_spread_is_over_every_box_not_over_the_images() -> None:
    """Boxes 0.9 and 0.5 in one image, 0.3 in another, none in a third; a score without its sum
    of squares (one score per sample) squares its total."""
    samples = [QualitySample(0.9 + 0.5, 2, 0.9**2 + 0.5**2), QualitySample(0.3, 1), QualitySample(0.0, 0)]
    assert quality_spread(samples) == pytest.approx(statistics.pstdev([0.9, 0.5, 0.3]))
    assert quality_spread([QualitySample(0.4, 1)]) == 0.0  # one score shows no spread


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


PROMPTS = ["zebra", "a photo of a software engineer", "a much longer prompt about an engineer who codes", "x"]


def test_tiny_clip_scores_each_image_against_its_own_prompt_whatever_its_batch(tiny_models: Path) -> None:
    """One sample per image in [0, 1], against the prompt beside it: prompts of other lengths in
    the same batch (padded together) change nothing, and swapping the prompts swaps the scores."""
    images = _images(4)
    in_pairs = ClipScore(str(tiny_models / "clip"), None, "cpu", batch_size=2).score(images, PROMPTS)
    alone = ClipScore(str(tiny_models / "clip"), None, "cpu", batch_size=1).score(images, PROMPTS)
    assert [s.count for s in in_pairs] == [1, 1, 1, 1]
    assert all(0.0 <= s.value <= 1.0 for s in in_pairs)
    assert [s.value for s in in_pairs] == pytest.approx([s.value for s in alone], abs=1e-5)
    scorer = ClipScore(str(tiny_models / "clip"), None, "cpu", batch_size=4)
    first_prompt = [scorer.score([image], [PROMPTS[0]])[0].value for image in images]
    assert [s.value for s in scorer.score(images, [PROMPTS[0]] * 4)] == pytest.approx(first_prompt, abs=1e-5)
    assert first_prompt[1] != pytest.approx(in_pairs[1].value, abs=1e-3)  # the prompt matters


def test_tiny_detector_confidence_lies_in_unit_interval(tiny_models: Path) -> None:
    scorer = load_quality_scorer("DetectorConfidence", str(tiny_models / "detector"), None, "cpu")
    assert isinstance(scorer, DetectorConfidence)
    scores = scorer.score(_images(3), ["unused by a detector"] * 3)
    assert len(scores) == 3
    for sample in scores:  # every counted box is at least 0.25 confident, at most 1
        assert 0.25 * sample.count <= sample.total <= sample.count


def test_the_spec_picks_the_quality_scorer(tiny_models: Path) -> None:
    """The scorer the spec names is the one that scores: CLIP's agreement with the prompt (the
    default), or the detector's confidence in the image alone, whatever the prompt."""
    images = _images(2)
    clip = load_quality_scorer(QualityScoring().scorer.value, str(tiny_models / "clip"), None, "cpu")
    assert clip.score(images, ["zebra"] * 2) != clip.score(images, [PROMPTS[1]] * 2)
    detector_scorer = QualityScoring(scorer="DetectorConfidence").scorer.value
    detector = load_quality_scorer(detector_scorer, str(tiny_models / "detector"), None, "cpu")
    boxes = detector.score(images, ["zebra"] * 2)
    assert boxes == detector.score(images, [PROMPTS[1]] * 2)
    assert any(sample.count > 1 for sample in boxes)  # boxes per image, not one score per image
