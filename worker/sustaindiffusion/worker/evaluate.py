"""Evaluating candidates: generate inside an energy window, then score outside it.

For each candidate and prompt, the images are generated with the task's seeds; the human filter
asks the VQA model whether each image shows a human and regenerates those that do not, with new
reproducible seeds, up to the retry cap (the regenerations count as generation energy); then the
gender, ethnicity and quality scores are computed. A candidate that fails gets its reason; the
other candidates of the pod still run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from sustaindiffusion.api.results import EvaluationResult, Metrics
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate, image_seed
from sustaindiffusion.worker.energy import EnergyMonitor, WindowEnergy
from sustaindiffusion.worker.errors import CandidateError
from sustaindiffusion.worker.generation import ImageGenerator
from sustaindiffusion.worker.scoring import (
    ETHNICITY_QUESTION,
    GENDER_QUESTION,
    HUMAN_QUESTION,
    QualityScorer,
    VisualQuestionAnswering,
    ethnic_bias,
    gender_bias,
    human_mask,
)
from sustaindiffusion.worker.weighting import UnsupportedWeightingError

log = logging.getLogger(__name__)


@dataclass
class CandidateOutcome:
    result: EvaluationResult
    retryable: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)  # one per image, for the artifacts


@dataclass
class _Energy:
    gpu: float = 0.0
    cpu: float = 0.0
    seconds: float = 0.0
    estimated: bool = False

    def add(self, window: WindowEnergy) -> None:
        self.gpu += window.gpu.joules
        self.cpu += window.cpu.joules
        self.seconds += window.seconds
        self.estimated |= window.estimated


@dataclass
class Evaluator:
    task: EvaluationTask
    generator: ImageGenerator
    vqa: VisualQuestionAnswering
    quality: QualityScorer
    energy: EnergyMonitor
    artifacts: Path | None = None
    on_images: Callable[[int], None] = lambda count: None  # live metrics hook
    generation_seconds: float = 0.0  # inside energy windows, over all candidates
    evaluation_seconds: float = 0.0  # generation and scoring, over all candidates

    def evaluate(self, candidate: TaskCandidate) -> CandidateOutcome:
        started = time.perf_counter()
        try:
            return self._evaluate(candidate)
        except CandidateError as error:
            return CandidateOutcome(
                EvaluationResult.failed(candidate.candidate_id, error.reason), error.retryable
            )
        except UnsupportedWeightingError as error:
            return CandidateOutcome(
                EvaluationResult.failed(candidate.candidate_id, str(error)), retryable=False
            )
        except Exception as error:  # a scorer or pipeline bug must not take the other candidates down
            log.exception("candidate %s failed", candidate.candidate_id)
            reason = f"{type(error).__name__}: {error}"
            return CandidateOutcome(EvaluationResult.failed(candidate.candidate_id, reason), retryable=False)
        finally:
            self.evaluation_seconds += time.perf_counter() - started

    def _generate(
        self, candidate: TaskCandidate, prompt: str, seeds: list[int], energy: _Energy
    ) -> list[Image.Image]:
        with self.energy.window() as window:
            images = self.generator.generate(candidate.settings, prompt, seeds)
        assert window.value is not None
        energy.add(window.value)
        self.generation_seconds += window.value.seconds
        self.on_images(len(images))
        return images

    def _evaluate(self, candidate: TaskCandidate) -> CandidateOutcome:
        task, settings = self.task, candidate.settings
        filter_spec = task.scoring.human_filter
        energy = _Energy()
        images: list[Image.Image] = []
        prompts_of_images: list[str] = []
        records: list[dict[str, Any]] = []
        regenerated = non_human = 0
        for prompt_index, prompt in enumerate(task.prompts):
            seeds = [
                image_seed(task.seeds, prompt_index, i, candidate.candidate_id)
                for i in range(task.images_per_prompt)
            ]
            batch = self._generate(candidate, prompt, seeds, energy)
            attempts = [0] * len(batch)
            if filter_spec.enabled:
                human = human_mask(self.vqa.answer(batch, HUMAN_QUESTION))
                for attempt in range(1, filter_spec.max_retries + 1):
                    retry = [i for i, ok in enumerate(human) if not ok]
                    if not retry:
                        break
                    retry_seeds = [
                        image_seed(task.seeds, prompt_index, i, candidate.candidate_id, attempt)
                        for i in retry
                    ]
                    fresh = self._generate(candidate, prompt, retry_seeds, energy)
                    regenerated += len(fresh)
                    fresh_human = human_mask(self.vqa.answer(fresh, HUMAN_QUESTION))
                    for i, seed, image, ok in zip(retry, retry_seeds, fresh, fresh_human, strict=True):
                        batch[i], human[i], attempts[i], seeds[i] = image, ok, attempt, seed
                non_human += human.count(False)
            else:
                human = [True] * len(batch)
            for i in range(len(batch)):
                records.append(
                    {
                        "prompt_index": prompt_index,
                        "image_index": i,
                        "seed": seeds[i],
                        "attempt": attempts[i],
                        "human": human[i],
                    }
                )
            images.extend(batch)
            prompts_of_images.extend([settings.positive_prompt(prompt)] * len(batch))

        gender_answers = self.vqa.answer(images, GENDER_QUESTION)
        ethnicity_answers = self.vqa.answer(images, ETHNICITY_QUESTION)
        quality_scores = self.quality.score(images, prompts_of_images)
        for record, gender, ethnicity, quality in zip(
            records, gender_answers, ethnicity_answers, quality_scores, strict=True
        ):
            record |= {"gender_answer": gender, "ethnicity_answer": ethnicity, "quality": quality}
        count = len(images)
        metrics = Metrics(
            gender_bias=gender_bias(gender_answers),
            ethnic_bias=ethnic_bias(ethnicity_answers),
            quality=sum(quality_scores) / count,
            energy_joules_per_image=(energy.gpu + energy.cpu) / count,
            seconds_per_image=energy.seconds / count,
            gpu_joules=energy.gpu,
            cpu_joules=energy.cpu,
            energy_estimated=energy.estimated,
            images=count,
        )
        if self.artifacts is not None:
            self._write_artifacts(candidate, images, records, metrics, regenerated, non_human)
        return CandidateOutcome(EvaluationResult.succeeded(candidate.candidate_id, metrics), records=records)

    def _write_artifacts(
        self,
        candidate: TaskCandidate,
        images: list[Image.Image],
        records: list[dict[str, Any]],
        metrics: Metrics,
        regenerated: int,
        non_human: int,
    ) -> None:
        assert self.artifacts is not None
        directory = self.artifacts / f"generation-{self.task.generation:04d}" / candidate.candidate_id
        directory.mkdir(parents=True, exist_ok=True)
        resolved = self.generator.resolve(candidate.settings)
        summary = {
            "candidate_id": candidate.candidate_id,
            "settings": candidate.settings.model_dump(mode="json", by_alias=True),
            "resolved": {
                "inferenceSteps": resolved.inference_steps,
                "guidanceScale": resolved.guidance_scale,
            },
            "metrics": metrics.model_dump(mode="json", by_alias=True),
            "energy_methods": list(self.energy.methods),
            "device": self.energy.device_name,
            "regenerated_images": regenerated,
            "non_human_images": non_human,
            "written_at": time.time(),
        }
        (directory / "candidate.json").write_text(json.dumps(summary, indent=2))
        with (directory / "images.jsonl").open("w") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
        if self.task.save_images:
            for record, image in zip(records, images, strict=True):
                image.save(directory / f"p{record['prompt_index']:03d}-i{record['image_index']:03d}.png")
