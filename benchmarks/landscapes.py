"""Simulated text-to-image models for search benchmarks, behind one interface (`Landscape`): each
evaluates a candidate's images [first_image, first_image + images) as the worker reports them
(`EvaluationResult`), and knows the candidate's TRUE objective values.

- `SimulatorLandscape`: `benchmarks/simulator.py`'s model, unchanged (its numbers are the same).
- `OvershootLandscape`: a second model with a different structure, made to break what the first
  cannot: keyword effects of unequal size; a gender response that overshoots parity; common random
  numbers across candidates; human-filter regenerations; energy per image that depends on the
  batch size. Calibrated like the first to SD3 medium's defaults (method.md: gender bias about 1,
  ethnic bias about 0.76, quality about 0.64, about 0.0021 kWh per image).

The overshoot model, per image i (its index in the candidate's images) and attempt a:
- The human filter: attempt a of image i shows no human when V[i, a] < q, the candidate's failure
  rate (raised by abstract keywords and very low guidance, each by its own amount); such images
  are regenerated (attempt a + 1) up to the retry cap (3, the spec's default), then recorded as
  non-human. The images kept are the last attempts.
- Gender: a kept human image is female when U[i, a] < p, with logit(p) = logit(0.03) + the sum of
  the selected keywords' own effects (female-leading positives; male-leading negatives while
  classifier-free guidance is on; a few quality keywords push the other way), scaled by the
  emphasis and by guidance. Enough keywords push p past 1/2 (all nine female-leading ones: about
  0.93), so gender bias |2p - 1| first falls, then rises again. 5% of gender answers map to no
  gender and do not count.
- Ethnicity: the group is drawn by inverting the CDF of the group shares at W[i, a]: softmax of
  the defaults' log-shares (0.8, 0.1, 0.06, 0.04) flattened by lower guidance, plus each quality
  keyword's own push towards particular groups. 10% of answers map to no group.
- Common random numbers: V, U, W and the quality latent Z are drawn from the run seed and the image
  index alone, the same for every candidate (as fixed seeds give similar images across settings),
  so candidates close in p or shares get nearly the same answers, and their differences are
  mostly real.
- Quality: the true quality (steps, guidance, each keyword's own small effect, non-human images
  0.1 lower) plus 0.04 Z[i, a] (shared) plus 0.03 of the candidate's own noise, per image.
- Energy: the worker generates a prompt's images in calls of min(remaining, 8) images (or, with
  `call_images`, in calls cut at every multiple of it, as an adaptive search's worker does), then
  calls per retry round for the images to regenerate. A call of b images costs b x passes x J per
  pass x (0.7 + 0.3 / b) (larger batches are cheaper per image), with 2% log-normal noise per
  call; passes = steps, doubled while classifier-free guidance is on (guidance > 1). The worker
  reports all joules (regenerations included) over the kept images.
- True energy: the expected J per kept image when the setting is used at full batches of 8:
  passes x J per pass x 0.7375 x (1 + q + q^2 + q^3).

Partial evaluations of a candidate see the same images: counts, answers and quality of [0, 5)
and [5, 20) add up to those of [0, 20) exactly (`merged`). Energy does not: a part runs its own,
smaller batches, and that difference is what an evaluation of fewer images misses.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from benchmarks import simulator
from sustaindiffusion.api.bias import ETHNIC_GROUPS, ethnic_bias, gender_bias
from sustaindiffusion.api.candidate import GUIDANCE_OFF_AT_OR_BELOW, CandidateSettings
from sustaindiffusion.api.keywords import (
    NEGATIVE_MALE_LEADING,
    POSITIVE_FEMALE_LEADING,
)
from sustaindiffusion.api.results import EvaluationResult, Metrics

FloatArray = npt.NDArray[np.float64]

METHOD_SPACE: dict[str, Any] = {
    "inferenceSteps": {"min": 25, "max": 80},
    "guidanceScale": {"min": 0.0, "max": 20.0, "step": 0.1},
    "promptWeight": {"min": 0, "max": 5},
}


@dataclass(frozen=True)
class TrueValues:
    gender_bias: float
    ethnic_bias: float
    energy_joules_per_image: float
    quality: float
    valid_share: float = 1.0  # the expected share of images that count for both biases


@dataclass(frozen=True)
class Evaluation:
    """What the worker reports, and the regenerations its artifacts record (`regenerated_images`)."""

    result: EvaluationResult
    regenerated: int

    @property
    def joules(self) -> float:
        metrics = self.result.metrics
        return 0.0 if metrics is None else metrics.gpu_joules + metrics.cpu_joules


class Landscape(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def search_space(self) -> dict[str, Any]:  # the spec's searchSpace
        ...

    def evaluate(
        self,
        candidate_id: str,
        settings: CandidateSettings,
        first_image: int,
        images: int,
        run_seed: int,
        call_images: int | None = None,
    ) -> Evaluation: ...

    def true_values(self, settings: CandidateSettings) -> TrueValues: ...


# ----------------------------------------------------------------------------- the first model


@dataclass(frozen=True)
class SimulatorLandscape:
    """`benchmarks/simulator.py` behind the `Landscape` interface: no regenerations, no batch effect."""

    model: simulator.Model = simulator.SD3_MEDIUM
    name: str = "simulator"

    @property
    def search_space(self) -> dict[str, Any]:
        return METHOD_SPACE

    def evaluate(
        self,
        candidate_id: str,
        settings: CandidateSettings,
        first_image: int,
        images: int,
        run_seed: int,
        call_images: int | None = None,
    ) -> Evaluation:
        result = simulator.simulate(candidate_id, settings, images, run_seed, self.model, first_image)
        return Evaluation(result, regenerated=0)

    def true_values(self, settings: CandidateSettings) -> TrueValues:
        truth = simulator.true_values(settings, self.model)
        return TrueValues(truth.gender_bias, truth.ethnic_bias, truth.energy_joules_per_image, truth.quality)


# ----------------------------------------------------------------------------- the overshoot model

BATCH = 8  # the worker's largest generate call
MAX_RETRIES = 3  # the human filter's default cap
BATCH_FIXED = 0.7  # J per image at batch b: per-pass cost x (BATCH_FIXED + (1 - BATCH_FIXED) / b)
DEFAULT_PASSES = 28 * 2
DEFAULT_JOULES = 0.0021 * 3.6e6  # SD3 medium's defaults, GPU + CPU, per image at full batches
ENERGY_NOISE = 0.02  # log-normal, per generate call
GPU_SHARE = 0.0019 / 0.0021
SECONDS_PER_PASS = 34.0 / DEFAULT_PASSES
BASE_FEMALE = 0.03
UNMAPPED_GENDER = 0.05
UNMAPPED_ETHNICITY = 0.10
SHARED_QUALITY = 0.04  # per-image quality noise common to all candidates (the seed's image)
OWN_QUALITY = 0.03
NON_HUMAN_QUALITY = 0.1  # quality lost by an image without a person
DEFAULT_SHARES = np.array([0.8, 0.1, 0.06, 0.04])

# Each keyword's own effect (unequal sizes, in the pools' order).
FEMALE_EFFECT = dict(
    zip(POSITIVE_FEMALE_LEADING, (2.2, 0.15, 0.9, 1.4, 0.05, 0.4, 0.6, 0.1, 0.25), strict=True)
)
MALE_NEGATIVE_EFFECT = dict(
    zip(NEGATIVE_MALE_LEADING, (0.5, 1.2, 0.1, 0.05, 0.3, 0.0, 0.8, 0.2, 0.05, 0.1, 0.0), strict=True)
)
QUALITY_GENDER_EFFECT = {"trending on artstation": -0.4, "award winning": -0.3, "Kodak portra 800": 0.2}
ETHNIC_PUSH = {  # log-share push per group (white, asian, black, arab)
    "photograph": (0.0, 0.2, 0.3, 0.1),
    "digital": (0.3, 0.2, 0.0, 0.0),
    "color": (0.0, 0.1, 0.6, 0.3),
    "Ultra Real": (0.0, 0.4, 0.4, 0.4),
    "film grain": (0.0, 0.0, 0.9, 0.2),
    "Kodak portra 800": (0.0, 1.1, 0.3, 0.0),
    "Depth of field 100mm": (0.0, 0.1, 0.1, 0.6),
    "overlapping compositions": (0.0, 0.0, 0.0, 0.0),
    "blended visuals": (0.0, 0.5, 0.5, 0.5),
    "trending on artstation": (0.4, 0.3, 0.0, 0.0),
    "award winning": (0.0, 0.0, 0.5, 0.9),
}
NON_HUMAN_EFFECT = {  # failure rate added per keyword (abstract images show no person)
    "blended visuals": 0.12,
    "overlapping compositions": 0.15,
    "digital": 0.04,
    "trending on artstation": 0.06,
    "illustration": -0.02,
    "drawing": -0.02,
}
QUALITY_EFFECT = {
    "photograph": 0.02,
    "Ultra Real": 0.015,
    "Depth of field 100mm": 0.01,
    "blended visuals": -0.03,
    "overlapping compositions": -0.025,
    "lowres": 0.01,
    "worst quality": 0.012,
    "low quality": 0.01,
}


def batch_factor(batch: int) -> float:
    """J per image of a call of `batch` images, relative to the per-pass cost."""
    return BATCH_FIXED + (1.0 - BATCH_FIXED) / batch


JOULES_PER_PASS = DEFAULT_JOULES / (DEFAULT_PASSES * batch_factor(BATCH))


@dataclass(frozen=True)
class _Response:
    """A candidate's true per-image probabilities and costs."""

    female: float
    shares: FloatArray
    failure: float
    quality: float
    passes: int


def _stream(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class OvershootLandscape:
    """The second model (see the module docstring)."""

    name: str = "overshoot"
    default_steps: int = 28
    default_guidance: float = 7.0

    @property
    def search_space(self) -> dict[str, Any]:
        return METHOD_SPACE

    def response(self, settings: CandidateSettings) -> _Response:
        steps = settings.inference_steps if settings.inference_steps is not None else self.default_steps
        guidance = settings.guidance_scale if settings.guidance_scale is not None else self.default_guidance
        guided = guidance > GUIDANCE_OFF_AT_OR_BELOW
        emphasis = 1.1 ** (2 * settings.prompt_weight)
        positive = settings.positive_keywords
        negative = settings.negative_keywords if guided else []
        strength = emphasis * (0.7 + 0.05 * min(guidance, 8.0))  # guidance amplifies the prompt
        logit = math.log(BASE_FEMALE / (1 - BASE_FEMALE)) + strength * (
            sum(FEMALE_EFFECT.get(k, 0.0) + QUALITY_GENDER_EFFECT.get(k, 0.0) for k in positive)
            + sum(MALE_NEGATIVE_EFFECT.get(k, 0.0) for k in negative)
        )
        female = 1.0 / (1.0 + math.exp(-logit))
        flatten = 0.5 + 0.5 * min(guidance, 7.0) / 7.0  # lower guidance: shares nearer balance
        push = sum((np.array(ETHNIC_PUSH[k]) for k in positive if k in ETHNIC_PUSH), np.zeros(4))
        scores = flatten * np.log(DEFAULT_SHARES) + emphasis * push
        shares = np.exp(scores - scores.max())
        shares /= shares.sum()
        failure = 0.03 + 0.1 * max(0.0, 2.0 - guidance) / 2.0
        failure += emphasis * sum(NON_HUMAN_EFFECT.get(k, 0.0) for k in [*positive, *negative])
        quality = (
            0.45
            + 0.2 * (1 - math.exp(-steps / 12.0))
            + 0.015 * min(guidance, 8.0)
            - 0.002 * (len(positive) + len(negative))
            + emphasis * sum(QUALITY_EFFECT.get(k, 0.0) for k in [*positive, *negative])
        )
        return _Response(
            female=female,
            shares=shares,
            failure=float(np.clip(failure, 0.0, 0.6)),
            quality=float(np.clip(quality, 0.0, 1.0)),
            passes=steps * (2 if guided else 1),
        )

    def true_values(self, settings: CandidateSettings) -> TrueValues:
        r = self.response(settings)
        non_human = r.failure ** (MAX_RETRIES + 1)
        regenerations = sum(r.failure**j for j in range(1, MAX_RETRIES + 1))
        return TrueValues(
            gender_bias=abs(2 * r.female - 1),
            ethnic_bias=float(r.shares.max() - r.shares.min()),
            energy_joules_per_image=r.passes * JOULES_PER_PASS * batch_factor(BATCH) * (1 + regenerations),
            quality=float(np.clip(r.quality - NON_HUMAN_QUALITY * non_human, 0.0, 1.0)),
            valid_share=(1 - non_human) * (1 - max(UNMAPPED_GENDER, UNMAPPED_ETHNICITY)),
        )

    def evaluate(
        self,
        candidate_id: str,
        settings: CandidateSettings,
        first_image: int,
        images: int,
        run_seed: int,
        call_images: int | None = None,
    ) -> Evaluation:
        r = self.response(settings)
        end = first_image + images
        attempts = MAX_RETRIES + 1
        # One stream per quantity, drawn image by image: image i's draws do not depend on how many
        # images come after it. The common ones are the same for every candidate.
        human_draw, female_draw, group_draw, gender_map, ethnic_map = (
            _stream("common", quantity, run_seed).random((end, attempts)) for quantity in range(5)
        )
        latent = _stream("common", "quality", run_seed).standard_normal((end, attempts))
        own = _stream("own", settings.canonical().candidate_id(), run_seed).standard_normal((end, attempts))
        window = slice(first_image, end)
        human = human_draw[window] >= r.failure  # (images, attempts)
        kept = np.where(human.any(axis=1), human.argmax(axis=1), MAX_RETRIES)  # each image's last attempt
        rows = np.arange(images)
        is_human = human[rows, kept]
        female = female_draw[window][rows, kept] < r.female
        group = np.minimum(
            np.searchsorted(np.cumsum(r.shares), group_draw[window][rows, kept], side="right"), 3
        )
        gender_mapped = is_human & (gender_map[window][rows, kept] >= UNMAPPED_GENDER)
        ethnic_mapped = is_human & (ethnic_map[window][rows, kept] >= UNMAPPED_ETHNICITY)
        quality = np.clip(
            r.quality
            - NON_HUMAN_QUALITY * ~is_human
            + SHARED_QUALITY * latent[window][rows, kept]
            + OWN_QUALITY * own[window][rows, kept],
            0.0,
            1.0,
        )
        # Generate calls: the images in batches of up to 8 (cut on the grid of `call_images`),
        # then one round per retry.
        calls = _calls(first_image, images, call_images)
        for attempt in range(1, attempts):
            redo = int(np.sum(kept >= attempt))  # images whose attempt - 1 showed no human
            calls.extend(_calls(0, redo, call_images))
        regenerated = int(kept.sum())
        noise = _stream("energy", settings.canonical().candidate_id(), run_seed, first_image, images)
        joules = sum(
            b
            * r.passes
            * JOULES_PER_PASS
            * batch_factor(b)
            * math.exp(ENERGY_NOISE * noise.standard_normal())
            for b in calls
        )
        female_count = int(np.sum(gender_mapped & female))
        male_count = int(np.sum(gender_mapped & ~female))
        ethnic = np.bincount(group[ethnic_mapped], minlength=4)
        metrics = Metrics(
            gender_bias=gender_bias(female_count, male_count),
            ethnic_bias=ethnic_bias([int(c) for c in ethnic]),
            quality=float(quality.mean()),
            energy_joules_per_image=joules / images,
            seconds_per_image=joules / images / JOULES_PER_PASS * SECONDS_PER_PASS,
            gpu_joules=joules * GPU_SHARE,
            cpu_joules=joules * (1 - GPU_SHARE),
            images=images,
            human_images=int(is_human.sum()),
            female_images=female_count,
            male_images=male_count,
            **{f"{g}_images": int(n) for g, n in zip(ETHNIC_GROUPS, ethnic, strict=True)},
            quality_stddev=float(quality.std()) if images > 1 else 0.0,
            energy_stderr=0.0,  # one prompt: the worker sees no spread across prompts
            regenerated_images=int(kept.sum()),
        )
        return Evaluation(EvaluationResult.succeeded(candidate_id, metrics), regenerated)


def _calls(first_image: int, images: int, call_images: int | None) -> list[int]:
    """The generate calls of images [first_image, first_image + images): cut at every multiple of
    `call_images` (none: from the first), each of at most `BATCH` images."""
    grid = call_images or images or 1
    cuts = [first_image, *range((first_image // grid + 1) * grid, first_image + images, grid)]
    ends = [*cuts[1:], first_image + images]
    return [
        min(BATCH, end - at) for start, end in zip(cuts, ends, strict=True) for at in range(start, end, BATCH)
    ]


def merged(first: Evaluation, rest: Evaluation) -> Evaluation:
    """One candidate's evaluation over both parts' images: counts, joules and seconds add, biases
    come from the summed counts, quality pools by images (its SD from both parts' moments)."""
    a, b = first.result.metrics, rest.result.metrics
    if a is None or b is None:
        raise ValueError("only successful evaluations merge")
    n1, n2 = a.images, b.images
    n = n1 + n2
    quality = (n1 * a.quality + n2 * b.quality) / n
    second_moment = (
        n1 * ((a.quality_stddev or 0.0) ** 2 + a.quality**2)
        + n2 * ((b.quality_stddev or 0.0) ** 2 + b.quality**2)
    ) / n
    counts = {
        name: int(getattr(a, name) or 0) + int(getattr(b, name) or 0)
        for name in ("human_images", "female_images", "male_images", *(f"{g}_images" for g in ETHNIC_GROUPS))
    }
    gpu, cpu = a.gpu_joules + b.gpu_joules, a.cpu_joules + b.cpu_joules
    metrics = a.model_copy(
        update={
            **counts,
            "gender_bias": gender_bias(counts["female_images"], counts["male_images"]),
            "ethnic_bias": ethnic_bias([counts[f"{g}_images"] for g in ETHNIC_GROUPS]),
            "quality": min(1.0, quality),
            "quality_stddev": math.sqrt(max(second_moment - quality**2, 0.0)),
            "energy_joules_per_image": (gpu + cpu) / n,
            "seconds_per_image": (n1 * a.seconds_per_image + n2 * b.seconds_per_image) / n,
            "gpu_joules": gpu,
            "cpu_joules": cpu,
            "images": n,
            "regenerated_images": (a.regenerated_images or 0) + (b.regenerated_images or 0),
        }
    )
    result = first.result.model_copy(update={"metrics": metrics})
    return Evaluation(result, first.regenerated + rest.regenerated)


LANDSCAPES: dict[str, Landscape] = {
    "simulator": SimulatorLandscape(),
    "overshoot": OvershootLandscape(),
}
