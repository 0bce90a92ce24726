"""A deterministic stand-in for the worker in engine tests: metrics are a fixed function of the
settings (conflicting, so there is a real trade-off), and chosen candidates can be made to fail."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.keywords import NEGATIVE_MALE_LEADING, POSITIVE_FEMALE_LEADING
from sustaindiffusion.api.results import EvaluationResult, Metrics, PromptStats
from sustaindiffusion.api.task import EvaluationTask

if TYPE_CHECKING:  # the stand-in worker imports this module: it starts faster without pymoo
    from sustaindiffusion.search.ledger import Candidate

IMAGES = 4


def _jitter(settings: CandidateSettings) -> float:
    digest = hashlib.sha256(settings.candidate_id().encode()).digest()
    return digest[0] / 255.0


def fake_metrics(settings: CandidateSettings) -> Metrics:
    steps = settings.inference_steps if settings.inference_steps is not None else 28
    guidance = settings.guidance_scale if settings.guidance_scale is not None else 7.0
    female = sum(k in POSITIVE_FEMALE_LEADING for k in settings.positive_keywords)
    male = sum(k in NEGATIVE_MALE_LEADING for k in settings.negative_keywords)
    keywords = len(settings.positive_keywords) + len(settings.negative_keywords)
    weight = settings.prompt_weight
    gender = max(0.0, 1.0 - 0.08 * female - 0.05 * male - 0.02 * weight * (female > 0))
    ethnic = min(1.0, 0.2 + 0.6 * abs(guidance - 9.0) / 20.0 + 0.1 * _jitter(settings))
    energy_per_image = 2.0 * steps * (1.0 + 0.01 * keywords)
    quality = min(
        1.0, 0.3 + 0.005 * steps + 0.01 * min(guidance, 10.0) - 0.008 * keywords - 0.02 * max(0, weight - 3)
    )
    return Metrics(
        gender_bias=min(1.0, gender),
        ethnic_bias=ethnic,
        quality=max(0.0, quality),
        energy_joules_per_image=energy_per_image,
        seconds_per_image=0.05 * steps,
        gpu_joules=0.8 * energy_per_image * IMAGES,
        cpu_joules=0.2 * energy_per_image * IMAGES,
        images=IMAGES,
    )


def fake_evaluate(
    candidate: Candidate, fails: Callable[[Candidate], bool] = lambda _: False
) -> EvaluationResult:
    if fails(candidate):
        return EvaluationResult.failed(candidate.candidate_id, "CUDA out of memory (simulated)")
    return EvaluationResult.succeeded(candidate.candidate_id, fake_metrics(candidate.settings))


def fake_prompt_stats(settings: CandidateSettings, prompts: int, images: int) -> list[PromptStats]:
    """Per-prompt statistics consistent with `fake_metrics`, varying a little from prompt to prompt."""
    metrics = fake_metrics(settings)
    stats = []
    for index in range(prompts):
        wobble = (_jitter(settings.model_copy(update={"prompt_weight": index})) - 0.5) * 0.2
        share_female = min(1.0, max(0.0, (1.0 - metrics.gender_bias) / 2 + wobble))
        female = round(images * share_female)
        white = round(images * min(1.0, 0.25 + metrics.ethnic_bias * 0.75))
        rest = images - white
        stats.append(
            PromptStats(
                images=images,
                human_images=images,
                female_images=female,
                male_images=images - female,
                white_images=white,
                asian_images=rest // 3,
                black_images=rest // 3,
                arab_images=rest - 2 * (rest // 3),
                quality_sum=metrics.quality * images,
                joules=metrics.energy_joules_per_image * images * (1 + wobble),
                seconds=metrics.seconds_per_image * images,
            )
        )
    return stats


def fake_task_result(
    candidate: Candidate, task: EvaluationTask, fails: Callable[[Candidate], bool] = lambda _: False
) -> EvaluationResult:
    """What a worker would report for `candidate` in `task`: per-prompt statistics for validation."""
    result = fake_evaluate(candidate, fails)
    if result.metrics is not None:  # the images the task asks for, as a worker counts them
        images = len(task.prompts) * task.images_per_prompt
        per_image = result.metrics.energy_joules_per_image
        result.metrics = result.metrics.model_copy(
            update={
                "images": images,
                "gpu_joules": 0.8 * per_image * images,
                "cpu_joules": 0.2 * per_image * images,
            }
        )
    if task.per_prompt and result.ok:
        result.per_prompt = fake_prompt_stats(candidate.settings, len(task.prompts), task.images_per_prompt)
    return result
