"""The CLIP zero-shot detector: its margin rule on hand-made logits, the per-image agreement of two
families, the real tiny CLIP loaded through from_pretrained, and the cross-check through the real
evaluate path (records, counts, the termination message, the merge of two parts)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sustaindiffusion.api.agreement import Agreement
from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.spec import DetectorFamily, ModelSpec, ScoringSpec
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate
from sustaindiffusion.api.wire import ShardReport, decode_report, encode_report
from sustaindiffusion.search.merging import merged
from sustaindiffusion.worker.answer_groups import (
    ETHNIC_GROUPS,
    count_agreement,
    count_answers,
    ethnic_group_of,
    gender_of,
    image_agreement,
)
from sustaindiffusion.worker.clip_detector import CANT_TELL, MARGIN, PROMPTS, ClipZeroShot, zero_shot_answers
from sustaindiffusion.worker.detectors import load_detectors
from sustaindiffusion.worker.energy import CpuEnergyMeter, EnergyMonitor
from sustaindiffusion.worker.evaluate import Evaluator
from sustaindiffusion.worker.generation import ImageGenerator
from sustaindiffusion.worker.scoring import ETHNICITY_QUESTION, GENDER_QUESTION, HUMAN_QUESTION, BlipVqa
from tests.worker.test_evaluate import ConstantQuality

PERSON, GENDER, ETHNICITY = PROMPTS[HUMAN_QUESTION], PROMPTS[GENDER_QUESTION], PROMPTS[ETHNICITY_QUESTION]
EDGE = 2 * math.atanh(MARGIN)  # two labels: p1 - p2 = tanh(gap / 2), so this gap leads by MARGIN


# ----------------------------------------------------------------------------- the rule


def test_the_prompts_are_the_answer_groups_words() -> None:
    assert PERSON.labels == ["yes", "no"]
    assert PERSON.texts[0] == "a photo of a person"
    assert PERSON.label_of_text == [0, 1, 1, 1]  # "no person": three prompts, one label
    assert GENDER.prompts == {"female": ("a photo of a woman",), "male": ("a photo of a man",)}
    assert ETHNICITY.labels == list(ETHNIC_GROUPS)
    assert ETHNICITY.texts == [
        "a photo of a white person",
        "a photo of an asian person",
        "a photo of a black person",
        "a photo of an arab person",
    ]
    # Every label is read back as its own group by the answer mapping the VQA family's words use.
    assert [gender_of(label) for label in GENDER.labels] == ["female", "male"]
    assert [ethnic_group_of(label) for label in ETHNICITY.labels] == list(ETHNIC_GROUPS)
    assert gender_of(CANT_TELL) is None
    assert ethnic_group_of(CANT_TELL) is None


def test_a_similarity_matrix_gives_the_leading_label_or_cant_tell() -> None:
    logits = torch.tensor(
        [
            [5.0, 1.0, 0.0, 2.0],  # person 5 against "no person" at its best prompt, 2: yes
            [0.0, 3.0, -9.0, -9.0],  # one "no person" prompt far ahead: no
            [2.0, 0.0, 2.05, 1.0],  # 2.0 against 2.05: p differ by 0.025 < MARGIN
            [1.0, 1.0, 1.0, 1.0],  # a tie
        ]
    )
    assert zero_shot_answers(logits, PERSON) == ["yes", "no", CANT_TELL, CANT_TELL]


def test_the_margin_is_on_the_probabilities_of_the_two_best_labels() -> None:
    gender = torch.tensor([[EDGE + 0.01, 0.0], [EDGE - 0.01, 0.0], [0.0, EDGE + 0.01], [0.0, 0.0]])
    assert zero_shot_answers(gender, GENDER) == ["female", CANT_TELL, "male", CANT_TELL]
    assert zero_shot_answers(gender, GENDER, margin=0.0) == ["female", "female", "male", "female"]
    assert zero_shot_answers(gender, GENDER, margin=1.0) == [CANT_TELL] * 4
    # Four labels: only the runner-up counts. 0.5 against 0.3 leads; 0.40 against 0.38 does not.
    ethnicity = torch.log(torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.1, 0.38, 0.12, 0.40]]))
    assert zero_shot_answers(ethnicity, ETHNICITY) == ["white", CANT_TELL]


def test_two_families_agree_on_the_gate_everywhere_and_on_the_rest_where_both_see_a_person() -> None:
    vqa, clip = (True, "woman", "caucasian"), (True, "female", "white")
    assert image_agreement(vqa, clip).gender is True
    assert image_agreement(vqa, clip).ethnicity is True
    assert image_agreement((True, "man", "robot"), (True, "female", CANT_TELL)).gender is False
    # An unmapped answer and a can't-tell are both no group: they agree.
    assert image_agreement((True, "man", "robot"), (True, "male", CANT_TELL)).ethnicity is True
    one_sided = image_agreement((True, "man", "asian"), (False, "male", "asian"))
    assert (one_sided.person, one_sided.gender, one_sided.ethnicity) == (False, None, None)
    neither = image_agreement((False, "man", "asian"), (False, "female", "black"))
    assert (neither.person, neither.gender, neither.ethnicity) == (True, None, None)
    counts = count_agreement(
        [
            image_agreement(vqa, clip),
            image_agreement((True, "man", "asian"), (True, "female", "asian")),
            image_agreement((True, "man", "asian"), (False, "male", "asian")),
            image_agreement((False, "man", "asian"), (False, "male", "asian")),
        ]
    )
    assert (counts.person_agreed, counts.persons, counts.gender_agreed, counts.ethnicity_agreed) == (
        3,
        2,
        1,
        2,
    )


# ----------------------------------------------------------------------------- the tiny model


def _images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)) for _ in range(count)]


def test_the_tiny_clip_answers_each_image_alone_whatever_its_batch(tiny_models: Path) -> None:
    images = _images(5)
    in_pairs = ClipZeroShot(str(tiny_models / "clip-detector"), None, "cpu", batch_size=2)
    at_once = ClipZeroShot(str(tiny_models / "clip-detector"), None, "cpu", batch_size=32)
    for question, prompts in PROMPTS.items():
        logits = in_pairs.logits(images, question)
        assert logits.shape == (5, len(prompts.texts))
        assert torch.allclose(logits, at_once.logits(images, question), atol=1e-4)
        answers = in_pairs.answer(images, question)
        assert answers == zero_shot_answers(logits, prompts)
        assert set(answers) <= {*prompts.labels, CANT_TELL}
    with pytest.raises(ValueError, match="no prompts for the question"):
        in_pairs.answer(images, "What colour is the sky?")


def test_the_tiny_clip_detectors_answers_change_with_the_image(sd3_pipeline: Any, tiny_models: Path) -> None:
    """Its projections are set on the tiny SD3's images (`tiny_clip`): across settings and seeds,
    images get different genders and groups, mostly a yes to the person question, and some a can't
    tell. The random tiny CLIP of the quality scorer answers every image alike."""
    images = []
    for steps, guidance in ((2, 1.0), (4, 7.0), (6, 3.0)):
        output = sd3_pipeline(
            ["Photo portrait of a Software Engineer that codes"] * 8,
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=64,
            height=64,
            generator=torch.Generator().manual_seed(steps),
        )
        images.extend(output.images)
    fitted = ClipZeroShot(str(tiny_models / "clip-detector"), None, "cpu")
    person = fitted.answer(images, HUMAN_QUESTION)
    genders = fitted.answer(images, GENDER_QUESTION)
    groups = fitted.answer(images, ETHNICITY_QUESTION)
    assert person.count("yes") > len(images) / 2
    assert {"female", "male"} <= set(genders)
    assert len(set(groups) - {CANT_TELL}) >= 2
    assert CANT_TELL in genders + groups
    random = ClipZeroShot(str(tiny_models / "clip"), None, "cpu")
    assert all(len(set(random.answer(images, q))) == 1 for q in PROMPTS)


def test_the_spec_picks_each_family_and_its_model(tiny_models: Path) -> None:
    scoring = ScoringSpec.model_validate(
        {
            "detector": "Clip",
            "clipModel": {"id": "clip-detector"},  # relative: resolved against the base folder, as in a task
            "vqaModel": {"id": "blip-vqa"},
            "crossCheck": {"family": "Vqa"},
        }
    )
    detector, check = load_detectors(scoring, "cpu", base=tiny_models)
    assert isinstance(detector, ClipZeroShot)
    assert isinstance(check, BlipVqa)
    plain, none = load_detectors(
        ScoringSpec.model_validate({"vqaModel": {"id": str(tiny_models / "blip-vqa")}}), "cpu"
    )
    assert isinstance(plain, BlipVqa)
    assert none is None


# ----------------------------------------------------------------------------- through evaluate


SETTINGS = [
    CandidateSettings(inference_steps=2, guidance_scale=3.0),
    CandidateSettings(
        inference_steps=3, guidance_scale=6.0, positive_keywords=["photograph"], prompt_weight=1
    ),
]


def _task(model: ModelSpec, tiny: Path, scoring: dict[str, Any], first_image: int = 0) -> EvaluationTask:
    return EvaluationTask(
        search="test",
        generation=1,
        model=model,
        prompts=["a portrait", "another portrait"],
        images_per_prompt=3,
        scoring=ScoringSpec.model_validate(
            {"vqaModel": {"id": str(tiny / "blip-vqa")}, "clipModel": {"id": str(tiny / "clip-detector")}}
            | scoring
        ),
        candidates=[TaskCandidate(candidate_id=s.candidate_id(), settings=s) for s in SETTINGS],
        candidates_per_shard=len(SETTINGS),
        save_images=False,
        first_image=first_image,
    )


def _evaluator(task: EvaluationTask, pipeline: Any, model: ModelSpec, tmp_path: Path) -> Evaluator:
    detector, check = load_detectors(task.scoring, "cpu")
    return Evaluator(
        task,
        ImageGenerator(pipeline, model, "cpu"),
        detector,
        ConstantQuality(),
        EnergyMonitor(None, CpuEnergyMeter(tmp_path / "no-rapl")),
        artifacts=tmp_path / "artifacts",
        cross_check=check,
    )


def _recount(records: list[dict[str, Any]], detector_gate: bool = False) -> tuple[int, int, int, int]:
    """The agreement counts from the records' raw answers, with the answer mapping alone; the
    detector's gate is the record's `human` (the filter's), or with the filter off its own answer."""

    def gate(record: dict[str, Any]) -> bool:
        return bool(record["cross_check"]["detector_human"] if detector_gate else record["human"])

    persons = [r for r in records if gate(r) and r["cross_check"]["human"]]
    return (
        sum(gate(r) == r["cross_check"]["human"] for r in records),
        len(persons),
        sum(gender_of(r["gender_answer"]) == gender_of(r["cross_check"]["gender_answer"]) for r in persons),
        sum(
            ethnic_group_of(r["ethnicity_answer"]) == ethnic_group_of(r["cross_check"]["ethnicity_answer"])
            for r in persons
        ),
    )


def _counts(metrics: Any) -> tuple[int, int, int, int]:
    return (
        metrics.cross_check_person_agreed,
        metrics.cross_check_persons,
        metrics.cross_check_gender_agreed,
        metrics.cross_check_ethnicity_agreed,
    )


def test_a_cross_checked_evaluation_records_both_families_and_counts_what_the_records_say(
    sd3_pipeline: Any, sd3_model: ModelSpec, tiny_models: Path, tmp_path: Path
) -> None:
    task = _task(sd3_model, tiny_models, {"crossCheck": {"family": "Clip"}, "humanFilter": {"maxRetries": 1}})
    evaluator = _evaluator(task, sd3_pipeline, sd3_model, tmp_path)
    assert isinstance(evaluator.vqa, BlipVqa)
    assert isinstance(evaluator.cross_check, ClipZeroShot)
    report = ShardReport(generation=1, shard=0)
    for candidate in task.candidates:
        outcome = evaluator.evaluate(candidate)
        assert outcome.result.ok, outcome.result.reason
        metrics = outcome.result.metrics
        assert metrics is not None
        records = outcome.records
        assert len(records) == metrics.images == 6
        for record in records:
            check = record["cross_check"]
            assert check["family"] == "Clip"
            assert check["human_answer"] in ("yes", "no", CANT_TELL)
            assert check["human"] == (check["human_answer"] == "yes")
            assert check["gender_answer"] in ("female", "male", CANT_TELL)
            assert check["ethnicity_answer"] in (*ETHNIC_GROUPS, CANT_TELL)
            assert check["detector_human"] == record["human"]  # the filter's gate is the detector's
        assert _counts(metrics) == _recount(records)
        # The detector's answers alone count for the biases, as without a cross-check.
        detector_counts = count_answers(
            [r["human"] for r in records],
            [r["gender_answer"] for r in records],
            [r["ethnicity_answer"] for r in records],
        )
        assert (metrics.human_images, metrics.female_images, metrics.male_images) == (
            detector_counts.human,
            detector_counts.female,
            detector_counts.male,
        )
        written = tmp_path / "artifacts/generation-0001" / candidate.candidate_id
        on_disk = [json.loads(line) for line in (written / "images.jsonl").read_text().splitlines()]
        assert on_disk == records
        summary = json.loads((written / "candidate.json").read_text())
        assert (summary["detector"], summary["cross_check"]) == ("Vqa", "Clip")
        report.results.append(outcome.result)
    # The families were compared on gender and ethnicity too, not on the person gate alone.
    assert sum(r.metrics.cross_check_persons or 0 for r in report.results if r.metrics) > 0
    decoded = decode_report(encode_report(report))
    for sent, received in zip(report.results, decoded.results, strict=True):
        assert received.metrics is not None
        assert sent.metrics is not None
        assert _counts(received.metrics) == _counts(sent.metrics)


def test_two_parts_of_a_candidate_add_up_to_its_agreement(
    sd3_pipeline: Any, sd3_model: ModelSpec, tiny_models: Path, tmp_path: Path
) -> None:
    """The first three images per prompt and the next three, each cross-checked: their merged
    counts are the records' of all six."""
    scoring = {"crossCheck": {"family": "Clip"}, "humanFilter": {"maxRetries": 0}}
    parts = [_task(sd3_model, tiny_models, scoring, first_image=start) for start in (0, 3)]
    outcomes = [
        _evaluator(task, sd3_pipeline, sd3_model, tmp_path / str(i)).evaluate(task.candidates[0])
        for i, task in enumerate(parts)
    ]
    first, rest = (outcome.result.metrics for outcome in outcomes)
    assert first is not None
    assert rest is not None
    both = merged(first, rest)
    records = [record for outcome in outcomes for record in outcome.records]
    assert _counts(both) == _recount(records)
    assert Agreement.of(both) is not None


def test_with_the_filter_off_the_detectors_gate_is_asked_for_the_comparison_only(
    sd3_pipeline: Any, sd3_model: ModelSpec, tiny_models: Path, tmp_path: Path
) -> None:
    scoring = {"detector": "Clip", "crossCheck": {"family": "Vqa"}, "humanFilter": {"enabled": False}}
    task = _task(sd3_model, tiny_models, scoring).model_copy(update={"save_images": True})
    assert task.scoring.detector_family is DetectorFamily.CLIP
    outcome = _evaluator(task, sd3_pipeline, sd3_model, tmp_path).evaluate(task.candidates[0])
    metrics = outcome.result.metrics
    assert metrics is not None
    assert metrics.human_images == metrics.images  # every image counts, as without a cross-check
    assert all(record["human"] for record in outcome.records)
    # The gate compared is the CLIP detector's own answer on each image (PNG keeps the pixels).
    folder = tmp_path / "artifacts/generation-0001" / task.candidates[0].candidate_id
    images = [
        Image.open(folder / f"p{r['prompt_index']:03d}-i{r['image_index']:03d}.png").convert("RGB")
        for r in outcome.records
    ]
    gate = ClipZeroShot(str(tiny_models / "clip-detector"), None, "cpu").answer(images, HUMAN_QUESTION)
    assert [r["cross_check"]["detector_human"] for r in outcome.records] == [a == "yes" for a in gate]
    assert _counts(metrics) == _recount(outcome.records, detector_gate=True)
