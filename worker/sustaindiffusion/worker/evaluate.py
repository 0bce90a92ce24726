"""Evaluating candidates: generate inside an energy window, then score outside it.

For each candidate and prompt, the images are generated with the task's seeds; the human filter
asks the VQA model whether each image shows a human and regenerates those that do not, with new
reproducible seeds, up to the retry cap (the regenerations count as generation energy); then the
gender, ethnicity and quality scores are computed. Only images judged human, and answers that map
to a group, count for the biases, and the counts travel with the result; quality is scored against
the bare prompt for everyone. A validation task also gets each prompt's share (`PromptStats`).
The detector (`vqa`) is the spec's detector family; with a cross-check (`spec.scoring.crossCheck`)
the other family answers the same questions on every final image, outside the energy windows, and
the result carries how often the two agree (`answer_groups.count_agreement`) while each image's
record keeps the second family's answers.
A candidate that fails gets its reason; the other candidates of the pod still run.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from sustaindiffusion.api.artifacts import candidate_directory, image_name
from sustaindiffusion.api.bias import ETHNIC_GROUPS, ethnic_bias, gender_bias
from sustaindiffusion.api.results import EvaluationResult, Metrics, PromptStats
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate, image_seed
from sustaindiffusion.worker.answer_groups import (
    AgreementCounts,
    count_agreement,
    count_answers,
    image_agreement,
    is_yes,
)
from sustaindiffusion.worker.energy import EnergyMonitor, WindowEnergy
from sustaindiffusion.worker.errors import CandidateError
from sustaindiffusion.worker.generation import ImageGenerator
from sustaindiffusion.worker.scoring import (
    ETHNICITY_QUESTION,
    GENDER_QUESTION,
    HUMAN_QUESTION,
    QualitySample,
    QualityScorer,
    VisualQuestionAnswering,
    human_mask,
    pooled_quality,
    quality_spread,
)

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

    def merge(self, other: _Energy) -> None:
        self.gpu += other.gpu
        self.cpu += other.cpu
        self.seconds += other.seconds
        self.estimated |= other.estimated


@dataclass
class Evaluator:
    task: EvaluationTask
    generator: ImageGenerator
    vqa: VisualQuestionAnswering
    quality: QualityScorer
    energy: EnergyMonitor
    artifacts: Path | None = None
    on_images: Callable[[int], None] = lambda count: None  # live metrics hook
    cross_check: VisualQuestionAnswering | None = None  # the second detector family (spec.scoring.crossCheck)
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
        except Exception as error:  # a scorer or pipeline bug must not take the other candidates down
            log.exception("candidate %s failed", candidate.candidate_id)
            reason = f"{type(error).__name__}: {error}"
            return CandidateOutcome(EvaluationResult.failed(candidate.candidate_id, reason), retryable=False)
        finally:
            self.evaluation_seconds += time.perf_counter() - started

    def _generate(
        self, candidate: TaskCandidate, prompt: str, seeds: list[int], energy: _Energy, first_image: int = 0
    ) -> list[Image.Image]:
        """The images of `seeds` (image indices from `first_image`), in the task's calls."""
        with self.energy.window() as window:
            calls = call_sizes(first_image, len(seeds), self.task.call_images)
            images = self.generator.generate(candidate.settings, prompt, seeds, calls)
        assert window.value is not None
        energy.add(window.value)
        self.generation_seconds += window.value.seconds
        self.on_images(len(images))
        return images

    def _evaluate(self, candidate: TaskCandidate) -> CandidateOutcome:
        task = self.task
        filter_spec = task.scoring.human_filter
        energy = _Energy()
        images: list[Image.Image] = []
        human: list[bool] = []
        records: list[dict[str, Any]] = []
        prompt_energy: list[_Energy] = []
        regenerated = 0
        # Where this evaluation's images start: a screening's rest, or more evidence for a point.
        first_image = candidate.first_image if candidate.first_image is not None else task.first_image
        for prompt_index, prompt in enumerate(task.prompts):
            this_prompt = _Energy()

            def seed_of(image: int, attempt: int = 0, prompt_index: int = prompt_index) -> int:
                return image_seed(
                    task.seeds, prompt_index, image, candidate.candidate_id, attempt, stream=task.seed_stream
                )

            indices = range(first_image, first_image + task.images_per_prompt)
            seeds = [seed_of(i) for i in indices]
            batch = self._generate(candidate, prompt, seeds, this_prompt, first_image)
            attempts = [0] * len(batch)
            is_human = [True] * len(batch)
            if filter_spec.enabled:
                is_human = human_mask(self.vqa.answer(batch, HUMAN_QUESTION))
                for attempt in range(1, filter_spec.max_retries + 1):
                    retry = [i for i, ok in enumerate(is_human) if not ok]
                    if not retry:
                        break
                    retry_seeds = [seed_of(first_image + i, attempt) for i in retry]
                    fresh = self._generate(candidate, prompt, retry_seeds, this_prompt)
                    regenerated += len(fresh)
                    fresh_human = human_mask(self.vqa.answer(fresh, HUMAN_QUESTION))
                    for i, seed, image, ok in zip(retry, retry_seeds, fresh, fresh_human, strict=True):
                        batch[i], is_human[i], attempts[i], seeds[i] = image, ok, attempt, seed
            for i in range(len(batch)):
                records.append(
                    {
                        "prompt_index": prompt_index,
                        "image_index": first_image + i,
                        "seed": seeds[i],
                        "attempt": attempts[i],
                        "human": is_human[i],
                    }
                )
            images.extend(batch)
            human.extend(is_human)
            energy.merge(this_prompt)
            prompt_energy.append(this_prompt)

        gender_answers = self.vqa.answer(images, GENDER_QUESTION)
        ethnicity_answers = self.vqa.answer(images, ETHNICITY_QUESTION)
        # One yardstick: the user's prompt, without the candidate's keywords or emphasis marks.
        bare_prompts = [task.prompts[record["prompt_index"]] for record in records]
        quality = self.quality.score(images, bare_prompts)
        for record, gender, ethnicity, sample in zip(
            records, gender_answers, ethnicity_answers, quality, strict=True
        ):
            record |= {
                "gender_answer": gender,
                "ethnicity_answer": ethnicity,
                "quality": sample.value,
                "quality_scores": sample.count,
            }
        counts = count_answers(human, gender_answers, ethnicity_answers)
        agreement = self._cross_check(images, records, human, gender_answers, ethnicity_answers)
        count = len(images)
        metrics = Metrics(
            gender_bias=gender_bias(counts.female, counts.male),
            ethnic_bias=ethnic_bias(counts.ethnic),
            quality=pooled_quality(quality),
            energy_joules_per_image=(energy.gpu + energy.cpu) / count,
            seconds_per_image=energy.seconds / count,
            gpu_joules=energy.gpu,
            cpu_joules=energy.cpu,
            energy_estimated=energy.estimated,
            images=count,
            human_images=counts.human,
            female_images=counts.female,
            male_images=counts.male,
            **{f"{group}_images": n for group, n in zip(ETHNIC_GROUPS, counts.ethnic, strict=True)},
            quality_stddev=quality_spread(quality),
            energy_stderr=_energy_stderr(prompt_energy, task.images_per_prompt),
            regenerated_images=regenerated,
            quality_scores=sum(sample.count for sample in quality),
            **(
                {
                    "cross_check_person_agreed": agreement.person_agreed,
                    "cross_check_persons": agreement.persons,
                    "cross_check_gender_agreed": agreement.gender_agreed,
                    "cross_check_ethnicity_agreed": agreement.ethnicity_agreed,
                }
                if agreement is not None
                else {}
            ),
        )
        result = EvaluationResult.succeeded(candidate.candidate_id, metrics)
        if task.per_prompt:
            result.per_prompt = self._per_prompt(
                records, human, gender_answers, ethnicity_answers, quality, prompt_energy
            )
        if self.artifacts is not None:
            self._write_artifacts(
                candidate, images, records, metrics, regenerated, count - counts.human, first_image
            )
        return CandidateOutcome(result, records=records)

    def _cross_check(
        self,
        images: list[Image.Image],
        records: list[dict[str, Any]],
        human: list[bool],
        genders: list[str],
        ethnicities: list[str],
    ) -> AgreementCounts | None:
        """The cross-check family's answers on every image (into its record) and how often they agree
        with the detector's; None without a cross-check. The detector's person gate is the human
        filter's (its answer on the image kept), or, with the filter off, asked here."""
        spec = self.task.scoring.cross_check
        if self.cross_check is None or spec is None:
            return None
        gate = human
        if not self.task.scoring.human_filter.enabled:
            gate = human_mask(self.vqa.answer(images, HUMAN_QUESTION))
        answers = [
            self.cross_check.answer(images, q) for q in (HUMAN_QUESTION, GENDER_QUESTION, ETHNICITY_QUESTION)
        ]
        compared = []
        for i, (record, human_answer, gender, ethnicity) in enumerate(zip(records, *answers, strict=True)):
            agrees = image_agreement(
                (gate[i], genders[i], ethnicities[i]), (is_yes(human_answer), gender, ethnicity)
            )
            compared.append(agrees)
            record["cross_check"] = {
                "family": spec.family.value,
                "human_answer": human_answer,
                "human": is_yes(human_answer),
                "gender_answer": gender,
                "ethnicity_answer": ethnicity,
                "detector_human": gate[i],
                "agrees": {"person": agrees.person, "gender": agrees.gender, "ethnicity": agrees.ethnicity},
            }
        return count_agreement(compared)

    def _per_prompt(
        self,
        records: list[dict[str, Any]],
        human: list[bool],
        genders: list[str],
        ethnicities: list[str],
        quality: list[QualitySample],
        prompt_energy: list[_Energy],
    ) -> list[PromptStats]:
        """Each prompt's counts, quality and energy: what held-out validation compares prompt by prompt."""
        stats = []
        for index, used in enumerate(prompt_energy):
            mine = [i for i, record in enumerate(records) if record["prompt_index"] == index]
            counts = count_answers(
                [human[i] for i in mine], [genders[i] for i in mine], [ethnicities[i] for i in mine]
            )
            stats.append(
                PromptStats(
                    images=len(mine),
                    human_images=counts.human,
                    female_images=counts.female,
                    male_images=counts.male,
                    **{f"{group}_images": n for group, n in zip(ETHNIC_GROUPS, counts.ethnic, strict=True)},
                    quality_sum=sum(quality[i].total for i in mine),
                    joules=used.gpu + used.cpu,
                    seconds=used.seconds,
                    quality_scores=sum(quality[i].count for i in mine),
                )
            )
        return stats

    def _write_artifacts(
        self,
        candidate: TaskCandidate,
        images: list[Image.Image],
        records: list[dict[str, Any]],
        metrics: Metrics,
        regenerated: int,
        non_human: int,
        first_image: int,
    ) -> None:
        assert self.artifacts is not None
        directory = candidate_directory(self.artifacts, self.task.generation, candidate.candidate_id)
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
            "device": self.energy.device().model_dump(mode="json", by_alias=True, exclude_none=True),
            "regenerated_images": regenerated,
            "non_human_images": non_human,
            "detector": self.task.scoring.detector_family.value,
            "cross_check": cross.family.value if (cross := self.task.scoring.cross_check) else None,
            "written_at": time.time(),
        }
        # Later images of a candidate (a screening's rest, more evidence) sit beside its first ones.
        suffix = f"-from-{first_image:03d}" if first_image else ""
        (directory / f"candidate{suffix}.json").write_text(json.dumps(summary, indent=2))
        with (directory / f"images{suffix}.jsonl").open("w") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
        if self.task.save_images:
            for record, image in zip(records, images, strict=True):
                image.save(directory / image_name(record["prompt_index"], record["image_index"]))


def call_sizes(first_image: int, images: int, call_images: int | None) -> list[int] | None:
    """The generate calls of images [first_image, first_image + images): cut at every multiple of
    `call_images`, so a part of a candidate's images runs in the very calls a whole evaluation of
    them would (None: the generator's own batching)."""
    if call_images is None:
        return None
    cuts = [
        first_image,
        *range((first_image // call_images + 1) * call_images, first_image + images, call_images),
    ]
    return [end - start for start, end in zip(cuts, [*cuts[1:], first_image + images], strict=True)]


def _energy_stderr(prompt_energy: list[_Energy], images_per_prompt: int) -> float:
    """The standard error of the energy per image, from its spread across the prompts' windows
    (0 with one prompt: one window shows no spread)."""
    if len(prompt_energy) < 2:
        return 0.0
    per_image = [(used.gpu + used.cpu) / images_per_prompt for used in prompt_energy]
    return float(statistics.stdev(per_image) / len(per_image) ** 0.5)
