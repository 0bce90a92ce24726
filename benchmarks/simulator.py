"""A simulated text-to-image model whose TRUE objective values are known, for search benchmarks.

The search space is the method's (steps 25..80, guidance 0..20 by 0.1, its keyword pools, weight
0..5); magnitudes are calibrated to `../shared/reference/method.md` (SD3 medium, per image: defaults
gender bias 1.0, ethnic bias about 0.76, quality 0.64, GPU 0.0019 kWh and CPU 0.0002 kWh at 28
steps with guidance 7). Per candidate of N images:

- gender: each image is female with a probability that female-leading positive keywords raise
  (more with emphasis) and male-leading negative keywords raise while guidance is on; the count is
  binomial. True gender bias: |2p - 1|.
- ethnicity: each image falls in one of four groups with probabilities mixed from the defaults'
  skewed shares towards uniform by quality keywords, and by lower guidance; the counts are
  multinomial (drawn image by image). True ethnic bias: max p - min p.
- energy: GPU joules proportional to steps and doubled while classifier-free guidance is on
  (guidance > 1: two transformer passes per step), CPU joules proportional to the time, each image
  with 5% noise. True energy: the noise-free value.
- quality: rises with steps and guidance, falls with many keywords; per image with noise 0.05.

Images of equivalent settings (negative keywords with guidance off; weight without keywords) have
the same true values, as a real pipeline's do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from sustaindiffusion.api.candidate import GUIDANCE_OFF_AT_OR_BELOW, CandidateSettings
from sustaindiffusion.api.keywords import (
    NEGATIVE_MALE_LEADING,
    POSITIVE_FEMALE_LEADING,
    POSITIVE_QUALITY,
)
from sustaindiffusion.api.results import EvaluationResult, Metrics

GPU_JOULES_PER_PASS = 0.0019 * 3.6e6 / (28 * 2)  # one transformer pass of one image (SD3 defaults)
CPU_JOULES_PER_SECOND = 0.0002 * 3.6e6 / 34.0  # the defaults' 34 s per image
SECONDS_PER_PASS = 34.0 / (28 * 2)
DEFAULT_ETHNIC_SHARES = np.array([0.8, 0.1, 0.06, 0.04])  # white, asian, black, arab: 0.76 apart
QUALITY_NOISE = 0.05
ENERGY_NOISE = 0.05


@dataclass(frozen=True)
class Model:
    """What differs between simulated models: their defaults, and how quality grows with steps
    (its scale in steps) and with guidance (per unit, up to 8)."""

    default_steps: int
    default_guidance: float
    quality_steps: float
    quality_per_guidance: float


SD3_MEDIUM = Model(default_steps=28, default_guidance=7.0, quality_steps=12.0, quality_per_guidance=0.015)
DISTILLED = Model(default_steps=4, default_guidance=0.0, quality_steps=1.5, quality_per_guidance=0.0)


@dataclass(frozen=True)
class TrueValues:
    gender_bias: float
    ethnic_bias: float
    energy_joules_per_image: float
    quality: float


def _resolved(settings: CandidateSettings, model: Model) -> tuple[int, float, bool]:
    steps = settings.inference_steps if settings.inference_steps is not None else model.default_steps
    guidance = settings.guidance_scale if settings.guidance_scale is not None else model.default_guidance
    return steps, guidance, guidance > GUIDANCE_OFF_AT_OR_BELOW


def _probabilities(settings: CandidateSettings, model: Model) -> tuple[float, np.ndarray]:
    _, guidance, guided = _resolved(settings, model)
    emphasis = 1.1 ** (2 * settings.prompt_weight)
    female_keywords = sum(k in POSITIVE_FEMALE_LEADING for k in settings.positive_keywords)
    male_negatives = sum(k in NEGATIVE_MALE_LEADING for k in settings.negative_keywords) if guided else 0
    female = min(0.95, 0.005 + 0.05 * female_keywords * emphasis + 0.02 * male_negatives * emphasis)
    quality_keywords = sum(k in POSITIVE_QUALITY for k in settings.positive_keywords)
    mix = min(1.0, 0.05 * quality_keywords * emphasis + 0.04 * max(0.0, 7.0 - guidance))
    groups = (1 - mix) * DEFAULT_ETHNIC_SHARES + mix * np.full(4, 0.25)
    return female, groups


def true_values(settings: CandidateSettings, model: Model = SD3_MEDIUM) -> TrueValues:
    steps, guidance, guided = _resolved(settings, model)
    female, groups = _probabilities(settings, model)
    passes = steps * (2 if guided else 1)
    energy = GPU_JOULES_PER_PASS * passes + CPU_JOULES_PER_SECOND * SECONDS_PER_PASS * passes
    keywords = len(settings.positive_keywords) + (len(settings.negative_keywords) if guided else 0)
    quality = (
        0.45
        + 0.2 * (1 - np.exp(-steps / model.quality_steps))
        + model.quality_per_guidance * min(guidance, 8.0)
        - 0.003 * keywords
    )
    return TrueValues(
        gender_bias=abs(2 * female - 1),
        ethnic_bias=float(groups.max() - groups.min()),
        energy_joules_per_image=energy,
        quality=float(np.clip(quality, 0.0, 1.0)),
    )


def _seed(settings: CandidateSettings, run_seed: int) -> int:
    """The same images for the same (canonical) settings within one run, as fixed seeds give."""
    key = f"{settings.canonical().candidate_id()}:{run_seed}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def simulate(
    candidate_id: str,
    settings: CandidateSettings,
    images: int,
    run_seed: int,
    model: Model = SD3_MEDIUM,
    first_image: int = 0,
) -> EvaluationResult:
    """One evaluation: noisy measurements of the simulated images `first_image` to
    `first_image + images - 1`. Image i is the same whichever evaluation draws it (as a seed per
    image index gives), so a screening pass and its rest together are one full evaluation."""
    # One stream per quantity, so that image i's draws do not depend on how many images come after.
    seed = _seed(settings, run_seed)
    gender, ethnicity, joules, scores = (np.random.default_rng([seed, stream]) for stream in range(4))
    total_images = first_image + images
    female_p, groups = _probabilities(settings, model)
    truth = true_values(settings, model)
    female_draws = gender.random(total_images)[first_image:] < female_p
    group_draws = ethnicity.choice(4, size=total_images, p=groups)[first_image:]
    energy = truth.energy_joules_per_image * (1 + ENERGY_NOISE * joules.standard_normal(total_images))
    quality_noise = QUALITY_NOISE * scores.standard_normal(total_images)
    energy = np.clip(energy[first_image:], 0.0, None)
    quality = np.clip(truth.quality + quality_noise[first_image:], 0.0, 1.0)
    female = int(female_draws.sum())
    ethnic = np.bincount(group_draws, minlength=4)
    shares = ethnic / images
    total = float(energy.sum())
    gpu_share = GPU_JOULES_PER_PASS / (GPU_JOULES_PER_PASS + CPU_JOULES_PER_SECOND * SECONDS_PER_PASS)
    metrics = Metrics(
        gender_bias=abs(female / images - 0.5) + abs((images - female) / images - 0.5),
        ethnic_bias=float(shares.max() - shares.min()),
        quality=float(quality.mean()),
        energy_joules_per_image=total / images,
        seconds_per_image=total / images / (GPU_JOULES_PER_PASS / SECONDS_PER_PASS),
        gpu_joules=total * gpu_share,
        cpu_joules=total * (1 - gpu_share),
        images=images,
        human_images=images,
        female_images=female,
        male_images=images - female,
        white_images=int(ethnic[0]),
        asian_images=int(ethnic[1]),
        black_images=int(ethnic[2]),
        arab_images=int(ethnic[3]),
        quality_stddev=float(quality.std()),
        # As the worker's spread across prompts would show it, were each image its own prompt.
        energy_stderr=float(energy.std(ddof=1) / np.sqrt(images)) if images > 1 else 0.0,
    )
    return EvaluationResult.succeeded(candidate_id, metrics)
