"""Evaluating candidates: the human filter's retry cap, metrics, artifacts, and per-candidate errors."""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.objectives import OBJECTIVES, ObjectiveName
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import ModelSpec, ScoringSpec
from sustaindiffusion.api.statistics import prompt_table
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate
from sustaindiffusion.search.merging import merged
from sustaindiffusion.worker.energy import CpuEnergyMeter, EnergyMonitor
from sustaindiffusion.worker.evaluate import Evaluator, call_sizes
from sustaindiffusion.worker.generation import ImageGenerator
from sustaindiffusion.worker.scoring import ETHNICITY_QUESTION, GENDER_QUESTION, HUMAN_QUESTION, QualitySample


class ScriptedVqa:
    """Answers from a script: human answers per call, fixed gender and ethnicity answers."""

    def __init__(
        self, human_answers: Sequence[str] = ("yes",), gender: str = "female", ethnicity: str = "asian"
    ):
        self.human_answers, self.gender, self.ethnicity = list(human_answers), gender, ethnicity
        self.calls: list[tuple[str, int]] = []

    def answer(self, images: Sequence[Image.Image], question: str) -> list[str]:
        assert all(image.mode == "RGB" for image in images)
        self.calls.append((question, len(images)))
        if question == HUMAN_QUESTION:
            index = min(sum(1 for q, _ in self.calls if q == HUMAN_QUESTION) - 1, len(self.human_answers) - 1)
            return [self.human_answers[index]] * len(images)
        return [self.gender if question == GENDER_QUESTION else self.ethnicity] * len(images)


class ConstantQuality:
    """A constant score per image; records the prompts it was given; can fail on its Nth call."""

    def __init__(self, value: float = 0.25, fail_on_call: int | None = None) -> None:
        self.value, self.fail_on_call = value, fail_on_call
        self.prompts: list[list[str]] = []

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[QualitySample]:
        self.prompts.append(list(prompts))
        if self.fail_on_call == len(self.prompts):
            raise RuntimeError("scorer crashed")
        return [QualitySample(self.value, 1)] * len(images)


def make_task(
    model: ModelSpec, settings: list[CandidateSettings], max_retries: int = 2, images: int = 2
) -> EvaluationTask:
    scoring = ScoringSpec.model_validate({"humanFilter": {"enabled": True, "maxRetries": max_retries}})
    return EvaluationTask(
        search="test",
        generation=1,
        model=model,
        prompts=["a portrait", "another portrait"],
        images_per_prompt=images,
        scoring=scoring,
        candidates=[TaskCandidate(candidate_id=s.candidate_id(), settings=s) for s in settings],
        candidates_per_shard=len(settings),
        save_images=True,
    )


def monitor(tmp_path: Path) -> EnergyMonitor:
    return EnergyMonitor(None, CpuEnergyMeter(tmp_path / "no-rapl"))


SETTINGS = CandidateSettings(inference_steps=2, guidance_scale=3.0)


def test_human_filter_retries_up_to_the_cap_then_records_non_human(
    sd3_pipeline: Any, sd3_model: ModelSpec, tmp_path: Path
) -> None:
    vqa = ScriptedVqa(human_answers=["no"])
    task = make_task(sd3_model, [SETTINGS], max_retries=2)
    generated: list[int] = []
    evaluator = Evaluator(
        task,
        ImageGenerator(sd3_pipeline, sd3_model, "cpu"),
        vqa,
        ConstantQuality(),
        monitor(tmp_path),
        artifacts=tmp_path / "artifacts",
        on_images=generated.append,
    )
    outcome = evaluator.evaluate(task.candidates[0])
    assert outcome.result.ok
    human_calls = [n for q, n in vqa.calls if q == HUMAN_QUESTION]
    assert human_calls == [2, 2, 2, 2, 2, 2]  # per prompt: the first try and two retries of both images
    assert sum(generated) == 2 * 2 * 3  # prompts x images x (1 + retries)
    assert [r["attempt"] for r in outcome.records] == [2, 2, 2, 2]
    assert not any(r["human"] for r in outcome.records)
    summary = json.loads(
        (
            tmp_path / "artifacts/generation-0001" / task.candidates[0].candidate_id / "candidate.json"
        ).read_text()
    )
    assert summary["non_human_images"] == 4
    assert summary["regenerated_images"] == 8


def test_human_filter_stops_when_images_are_human(
    sd3_pipeline: Any, sd3_model: ModelSpec, tmp_path: Path
) -> None:
    vqa = ScriptedVqa(human_answers=["no", "yes", "no", "yes"])  # per prompt: not human, then human
    task = make_task(sd3_model, [SETTINGS], max_retries=5)
    evaluator = Evaluator(
        task, ImageGenerator(sd3_pipeline, sd3_model, "cpu"), vqa, ConstantQuality(), monitor(tmp_path)
    )
    outcome = evaluator.evaluate(task.candidates[0])
    assert [r["attempt"] for r in outcome.records] == [1, 1, 1, 1]
    assert all(r["human"] for r in outcome.records)


def test_metrics_follow_the_formulas_and_energy_is_per_image(
    sd3_pipeline: Any, sd3_model: ModelSpec, tmp_path: Path
) -> None:
    vqa = ScriptedVqa(gender="female", ethnicity="asian")
    task = make_task(sd3_model, [SETTINGS])
    evaluator = Evaluator(
        task,
        ImageGenerator(sd3_pipeline, sd3_model, "cpu"),
        vqa,
        ConstantQuality(0.3),
        monitor(tmp_path),
        artifacts=tmp_path,
    )
    metrics = evaluator.evaluate(task.candidates[0]).result.metrics
    assert metrics is not None
    assert metrics.images == 4
    assert metrics.gender_bias == pytest.approx(1.0)  # all female
    assert metrics.ethnic_bias == pytest.approx(1.0)  # all asian
    assert (metrics.human_images, metrics.female_images, metrics.male_images) == (4, 4, 0)
    assert metrics.ethnic_counts() == [0, 4, 0, 0]
    assert metrics.valid_share == 1.0
    assert metrics.quality_stddev == 0.0
    assert metrics.quality == pytest.approx(0.3)
    assert metrics.energy_estimated  # no RAPL and no GPU here: the CPU part is an estimate
    assert metrics.energy_joules_per_image == pytest.approx((metrics.gpu_joules + metrics.cpu_joules) / 4)
    assert metrics.seconds_per_image > 0
    directory = tmp_path / "generation-0001" / task.candidates[0].candidate_id
    assert len(list(directory.glob("*.png"))) == 4
    assert len((directory / "images.jsonl").read_text().splitlines()) == 4
    assert {q for q, _ in vqa.calls} == {HUMAN_QUESTION, GENDER_QUESTION, ETHNICITY_QUESTION}


def test_a_scorer_failure_fails_only_its_candidate(
    sd3_pipeline: Any, sd3_model: ModelSpec, tmp_path: Path
) -> None:
    broken = CandidateSettings(inference_steps=2, guidance_scale=3.0, positive_keywords=["photograph"])
    task = make_task(sd3_model, [broken, SETTINGS])
    evaluator = Evaluator(
        task,
        ImageGenerator(sd3_pipeline, sd3_model, "cpu"),
        ScriptedVqa(),
        ConstantQuality(fail_on_call=1),
        monitor(tmp_path),
    )
    first, second = (evaluator.evaluate(c) for c in task.candidates)
    assert not first.result.ok
    assert first.result.reason == "RuntimeError: scorer crashed"
    assert second.result.ok


class FakePipeline:
    """Stands in for a diffusers pipeline that misbehaves."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    def __call__(
        self, prompt: Any = None, num_inference_steps: int = 20, guidance_scale: float = 5.0, **kwargs: Any
    ) -> Any:
        count = kwargs.get("num_images_per_prompt", 1)
        if self.behaviour == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        pixels = np.full((count, 8, 8, 3), np.nan if self.behaviour == "nan" else 0.5, dtype=np.float32)
        return type("Output", (), {"images": pixels})()


@pytest.mark.parametrize(
    ("behaviour", "reason", "retryable"),
    [("nan", "NaN or infinite pixels", False), ("oom", "out of memory with one image per batch", True)],
)
def test_generation_errors_are_recorded_against_the_candidate(
    behaviour: str, reason: str, retryable: bool, sd3_model: ModelSpec, tmp_path: Path
) -> None:
    task = make_task(sd3_model, [SETTINGS])
    generator = ImageGenerator(FakePipeline(behaviour), sd3_model, "cpu")
    outcome = Evaluator(task, generator, ScriptedVqa(), ConstantQuality(), monitor(tmp_path)).evaluate(
        task.candidates[0]
    )
    assert not outcome.result.ok
    assert reason in (outcome.result.reason or "")
    assert outcome.retryable is retryable


def test_weights_on_an_unsupported_pipeline_are_refused(sd3_model: ModelSpec, tmp_path: Path) -> None:
    weighted = CandidateSettings(inference_steps=2, positive_keywords=["photograph"], prompt_weight=2)
    task = make_task(sd3_model, [weighted])
    generator = ImageGenerator(FakePipeline("ok"), sd3_model, "cpu")
    outcome = Evaluator(task, generator, ScriptedVqa(), ConstantQuality(), monitor(tmp_path)).evaluate(
        task.candidates[0]
    )
    assert "prompt weighting is not supported for FakePipeline" in (outcome.result.reason or "")


def test_every_candidate_is_scored_against_the_bare_prompt(
    sd3_pipeline: Any, sd3_model: ModelSpec, tmp_path: Path
) -> None:
    keywords = CandidateSettings(
        inference_steps=2, guidance_scale=3.0, positive_keywords=["photograph", "gentle"], prompt_weight=2
    )
    task = make_task(sd3_model, [keywords, CandidateSettings()])
    quality = ConstantQuality()
    evaluator = Evaluator(
        task, ImageGenerator(sd3_pipeline, sd3_model, "cpu"), ScriptedVqa(), quality, monitor(tmp_path)
    )
    for candidate in task.candidates:
        assert evaluator.evaluate(candidate).result.ok
    expected = ["a portrait", "a portrait", "another portrait", "another portrait"]
    assert quality.prompts == [expected, expected]  # no keywords, no emphasis marks, for everyone


@pytest.mark.parametrize(
    ("vqa", "human", "gender_bias", "ethnic_bias", "valid"),
    [
        (ScriptedVqa(human_answers=["no"]), 0, 1.0, 1.0, 0.0),  # no image shows a human
        (ScriptedVqa(gender="robot", ethnicity="martian"), 4, 1.0, 1.0, 0.0),  # no answer maps
        (ScriptedVqa(gender="woman", ethnicity="martian"), 4, 1.0, 1.0, 0.0),  # gender only
    ],
    ids=["no human", "all unmapped", "no ethnicity"],
)
def test_no_evidence_is_the_worst_bias_and_no_valid_image(
    vqa: ScriptedVqa,
    human: int,
    gender_bias: float,
    ethnic_bias: float,
    valid: float,
    sd3_pipeline: Any,
    sd3_model: ModelSpec,
    tmp_path: Path,
) -> None:
    task = make_task(sd3_model, [SETTINGS], max_retries=0)
    evaluator = Evaluator(
        task, ImageGenerator(sd3_pipeline, sd3_model, "cpu"), vqa, ConstantQuality(), monitor(tmp_path)
    )
    metrics = evaluator.evaluate(task.candidates[0]).result.metrics
    assert metrics is not None
    assert metrics.human_images == human
    assert (metrics.gender_bias, metrics.ethnic_bias) == (gender_bias, ethnic_bias)
    assert metrics.valid_share == valid


def test_a_validation_task_reports_each_prompts_share(
    sd3_pipeline: Any, sd3_model: ModelSpec, tmp_path: Path
) -> None:
    task = make_task(sd3_model, [SETTINGS]).model_copy(update={"per_prompt": True})
    result = (
        Evaluator(
            task,
            ImageGenerator(sd3_pipeline, sd3_model, "cpu"),
            ScriptedVqa(),
            ConstantQuality(0.5),
            monitor(tmp_path),
        )
        .evaluate(task.candidates[0])
        .result
    )
    assert result.per_prompt is not None
    assert [p.images for p in result.per_prompt] == [2, 2]
    assert [p.female_images for p in result.per_prompt] == [2, 2]
    assert [p.quality_sum for p in result.per_prompt] == [1.0, 1.0]
    assert result.metrics is not None
    total = sum(p.joules for p in result.per_prompt)
    assert total == pytest.approx(result.metrics.gpu_joules + result.metrics.cpu_joules)


def test_a_rest_part_generates_the_images_of_a_whole_evaluation_from_its_first_index(
    sd3_pipeline: Any, sd3_model: ModelSpec, tmp_path: Path
) -> None:
    """Screening: the first pass (images 0..0) and the rest (images 1..2) together are the images
    a whole evaluation of three generates, seed for seed; the rest's artifacts
    sit beside the first pass's."""

    def evaluate(task: EvaluationTask, artifacts: Path) -> list[dict[str, Any]]:
        evaluator = Evaluator(
            task,
            ImageGenerator(sd3_pipeline, sd3_model, "cpu"),
            ScriptedVqa(),
            ConstantQuality(),
            monitor(tmp_path),
            artifacts=artifacts,
        )
        outcome = evaluator.evaluate(task.candidates[0])
        assert outcome.result.ok
        return outcome.records

    whole = make_task(sd3_model, [SETTINGS], images=3)
    first = whole.model_copy(update={"images_per_prompt": 1})
    rest = whole.model_copy(update={"images_per_prompt": 2, "first_image": 1})
    whole_records = evaluate(whole, tmp_path / "whole")
    parts = evaluate(first, tmp_path / "parts") + evaluate(rest, tmp_path / "parts")

    def key(record: dict[str, Any]) -> tuple[int, int]:
        return record["prompt_index"], record["image_index"]

    assert sorted((key(r), r["seed"]) for r in parts) == sorted((key(r), r["seed"]) for r in whole_records)
    whole_dir = tmp_path / "whole/generation-0001" / SETTINGS.candidate_id()
    parts_dir = tmp_path / "parts/generation-0001" / SETTINGS.candidate_id()
    assert sorted(p.name for p in parts_dir.glob("*.png")) == sorted(p.name for p in whole_dir.glob("*.png"))
    for image in whole_dir.glob("*.png"):
        # The same noise; another batch size rounds the last bits of the arithmetic differently.
        whole_pixels = np.asarray(Image.open(image), dtype=int)
        part_pixels = np.asarray(Image.open(parts_dir / image.name), dtype=int)
        assert np.abs(whole_pixels - part_pixels).max() <= 2, image.name
    assert (parts_dir / "candidate.json").exists()
    assert len((parts_dir / "images-from-001.jsonl").read_text().splitlines()) == 4  # 2 prompts x 2


@pytest.mark.parametrize(
    ("first_image", "images", "call_images", "expected"),
    [(0, 10, 5, [5, 5]), (3, 9, 5, [2, 5, 2]), (5, 5, 5, [5]), (0, 3, 5, [3]), (0, 7, None, None)],
)
def test_calls_are_cut_on_one_grid_of_image_indices(
    first_image: int, images: int, call_images: int | None, expected: list[int] | None
) -> None:
    assert call_sizes(first_image, images, call_images) == expected


def test_every_part_runs_in_the_calls_a_whole_evaluation_would() -> None:
    """Whatever the parts, a call never crosses a multiple of call_images, and the parts' calls
    together are the whole evaluation's."""
    for call_images in (1, 3, 5):
        whole = call_sizes(0, 20, call_images)
        for cut in range(1, 20):
            first, rest = call_sizes(0, cut, call_images), call_sizes(cut, 20 - cut, call_images)
            assert first is not None
            assert rest is not None
            assert whole is not None
            edges = [0, *itertools.accumulate(first), *(cut + e for e in itertools.accumulate(rest))]
            assert edges[-1] == 20
            crossing = [a for a, b in itertools.pairwise(edges) if a // call_images != (b - 1) // call_images]
            assert not crossing
            if cut % call_images == 0:
                assert first + rest == whole


class SeedCodedImages(ImageGenerator):
    """Stands in for the generator (no model): each image a flat colour its seed picks, so a
    scorer sees the same image for the same seed in whatever part it is generated."""

    def __init__(self) -> None:  # no pipeline to hold
        pass

    def generate(
        self,
        settings: CandidateSettings,
        base_prompt: str,
        seeds: Sequence[int],
        calls: Sequence[int] | None = None,
    ) -> list[Image.Image]:
        return [Image.new("RGB", (4, 4), (seed % 251, 0, 0)) for seed in seeds]


class BoxesDetector:
    """A detector stand-in: 0 to 3 confident boxes per image, their number and confidences read
    from the image (so from its seed), each box a score as DetectorConfidence pools them."""

    def boxes(self, image: Image.Image) -> list[float]:
        red = int(np.asarray(image)[0, 0, 0])
        return [0.3 + 0.2 * ((red + box) % 4) for box in range(red % 4)]

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[QualitySample]:
        samples = []
        for image in images:
            kept = self.boxes(image)
            samples.append(QualitySample(sum(kept), len(kept), sum(c * c for c in kept)))
        return samples


def _boxes_evaluation(task: EvaluationTask, tmp_path: Path) -> tuple[EvaluationResult, list[list[float]]]:
    detector = BoxesDetector()
    generator = SeedCodedImages()
    outcome = Evaluator(task, generator, ScriptedVqa(), detector, monitor(tmp_path)).evaluate(
        task.candidates[0]
    )
    boxes = []
    for record in outcome.records:
        image = generator.generate(SETTINGS, "", [record["seed"]])[0]
        boxes.append(detector.boxes(image))
    return outcome.result, boxes


def test_the_detectors_quality_pools_its_boxes_not_its_images(sd3_model: ModelSpec, tmp_path: Path) -> None:
    task = make_task(sd3_model, [SETTINGS], images=6).model_copy(update={"per_prompt": True})
    result, boxes = _boxes_evaluation(task, tmp_path)
    every_box = [score for image in boxes for score in image]
    assert len({len(image) for image in boxes}) > 1  # images with different numbers of boxes
    metrics = result.metrics
    assert metrics is not None
    assert metrics.images == 12
    assert metrics.quality_scores == len(every_box)
    assert metrics.quality == pytest.approx(statistics.fmean(every_box))
    assert metrics.quality_stddev == pytest.approx(statistics.pstdev(every_box))
    by_image = statistics.fmean(statistics.fmean(image) for image in boxes if image)
    assert metrics.quality != pytest.approx(by_image)  # the mean of per-image means differs here
    assert result.per_prompt is not None
    assert sum(p.quality_scores or 0 for p in result.per_prompt) == len(every_box)
    assert sum(p.quality_sum for p in result.per_prompt) == pytest.approx(sum(every_box))
    held_out = OBJECTIVES[ObjectiveName.QUALITY].held_out.value(prompt_table(result.per_prompt).sum(axis=0))
    assert float(held_out) == pytest.approx(metrics.quality)


def test_two_parts_merged_give_the_quality_of_one_evaluation_of_their_images(
    sd3_model: ModelSpec, tmp_path: Path
) -> None:
    """Plain (images 0..5 at once) against merged (images 0..1, then 2..5): with boxes pooled by
    image the two disagreed whenever the parts found boxes at different rates; pooled by box
    (weighted by the scores each part recorded) they agree."""
    whole = make_task(sd3_model, [SETTINGS], images=6)
    first = whole.model_copy(update={"images_per_prompt": 2})
    rest = whole.model_copy(update={"images_per_prompt": 4, "first_image": 2})
    plain, _ = _boxes_evaluation(whole, tmp_path)
    head, _ = _boxes_evaluation(first, tmp_path)
    tail, _ = _boxes_evaluation(rest, tmp_path)
    assert plain.metrics is not None
    assert head.metrics is not None
    assert tail.metrics is not None
    combined = merged(head.metrics, tail.metrics)
    by_images = (head.metrics.images * head.metrics.quality + tail.metrics.images * tail.metrics.quality) / 12
    assert by_images != pytest.approx(plain.metrics.quality)  # the old merge's mismatch, reproduced
    assert combined.quality == pytest.approx(plain.metrics.quality)
    assert combined.quality_stddev == pytest.approx(plain.metrics.quality_stddev)
    assert combined.quality_scores == plain.metrics.quality_scores
