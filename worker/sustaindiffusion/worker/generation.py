"""Loading a diffusers pipeline once and generating a candidate's images with fixed seeds."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.spec import ModelSpec, PipelineDtype
from sustaindiffusion.worker.errors import CandidateError, PermanentTaskError
from sustaindiffusion.worker.families import adapter_for

HUB_TOKEN_ENV = "HF_TOKEN"


def choose_device(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_dtype(dtype: PipelineDtype, device: str) -> torch.dtype:
    if dtype is PipelineDtype.AUTO:
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype.value]


def resolve_model_path(model_id: str, base: Path | None = None) -> str:
    """A local folder (absolute, or relative to `base`) when one exists, else the hub id as given."""
    candidate = Path(model_id)
    if not candidate.is_absolute() and base is not None and (base / candidate).is_dir():
        return str((base / candidate).resolve())
    return str(candidate.resolve()) if candidate.is_dir() else model_id


def load_pipeline(model: ModelSpec, device: str, base: Path | None = None) -> Any:
    """`from_pretrained` with the spec's class, revision and dtype; no CPU offload: all goes to `device`."""
    import diffusers  # noqa: PLC0415 - heavy import, done once per pod

    if model.pipeline_class == "Auto":
        pipeline_class = diffusers.DiffusionPipeline
    else:
        pipeline_class = getattr(diffusers, model.pipeline_class, None)
        if pipeline_class is None or not hasattr(pipeline_class, "from_pretrained"):
            raise PermanentTaskError(f"unknown pipeline class {model.pipeline_class!r}: not in diffusers")
    location = resolve_model_path(model.id, base)
    try:
        pipeline = pipeline_class.from_pretrained(
            location,
            revision=model.revision,
            dtype=choose_dtype(model.dtype, device),
            token=os.environ.get(HUB_TOKEN_ENV) or None,
        )
    except (OSError, ValueError) as error:
        raise PermanentTaskError(f"cannot load model {model.id!r}: {str(error).splitlines()[0]}") from error
    except TypeError as error:
        raise PermanentTaskError(
            f"model {model.id!r} does not fit pipeline class {model.pipeline_class}: {error}"
        ) from error
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@dataclass(frozen=True)
class ResolvedSettings:
    """Settings with the pipeline's own defaults filled in, as they were used."""

    inference_steps: int
    guidance_scale: float


class ImageGenerator:
    def __init__(self, pipeline: Any, model: ModelSpec, device: str, max_batch: int = 8) -> None:
        self.pipeline, self.model, self.device, self.max_batch = pipeline, model, device, max_batch
        self.adapter = adapter_for(pipeline, model.family)
        defaults = self.adapter.defaults()
        self.default_steps, self.default_guidance = defaults.inference_steps, defaults.guidance_scale

    def resolve(self, settings: CandidateSettings) -> ResolvedSettings:
        return ResolvedSettings(
            inference_steps=settings.inference_steps
            if settings.inference_steps is not None
            else self.default_steps,
            guidance_scale=settings.guidance_scale
            if settings.guidance_scale is not None
            else self.default_guidance,
        )

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def warm_up(self) -> None:
        """One short generation outside any measurement window (kernels, allocator, caches)."""
        self.generate(CandidateSettings(inference_steps=2), "warm-up", [0])

    @torch.inference_mode()
    def generate(
        self,
        settings: CandidateSettings,
        base_prompt: str,
        seeds: Sequence[int],
        calls: Sequence[int] | None = None,
    ) -> list[Image.Image]:
        """Images for one prompt, one per seed, in calls of `calls` images (absent: as many as fit
        the largest batch), each split further as memory allows (halving on out-of-memory)."""
        resolved = self.resolve(settings)
        images: list[Image.Image] = []
        ends = list(itertools.accumulate(calls)) if calls is not None else []
        if ends and ends[-1] != len(seeds):
            raise ValueError(f"calls of {sum(calls or [])} images for {len(seeds)} seeds")
        batch = self.max_batch
        start = 0
        while start < len(seeds):
            end = next((e for e in ends if e > start), len(seeds))
            chunk = seeds[start : min(start + batch, end)]
            try:
                images.extend(self._generate_batch(settings, resolved, base_prompt, chunk))
            except torch.OutOfMemoryError as error:
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                if len(chunk) == 1:
                    raise CandidateError(
                        f"out of memory with one image per batch: {error}", retryable=True
                    ) from None
                batch = max(1, len(chunk) // 2)
                continue
            start += len(chunk)
        return images

    def _generate_batch(
        self, settings: CandidateSettings, resolved: ResolvedSettings, base_prompt: str, seeds: Sequence[int]
    ) -> list[Image.Image]:
        generators = [torch.Generator(device=self.device).manual_seed(seed) for seed in seeds]
        arguments = self.adapter.prompt_arguments(
            settings.positive_prompt(base_prompt),
            settings.negative_prompt(),
            self.device,
            len(seeds),
            resolved.guidance_scale,
        )
        output = self.pipeline(
            **arguments,
            num_inference_steps=resolved.inference_steps,
            guidance_scale=resolved.guidance_scale,
            width=self.model.width,
            height=self.model.height,
            generator=generators,
            output_type="np",
        )
        pixels = np.asarray(output.images)
        if not np.all(np.isfinite(pixels)):
            raise CandidateError("the pipeline produced NaN or infinite pixels", retryable=False)
        return [Image.fromarray((np.clip(p, 0, 1) * 255).round().astype(np.uint8)) for p in pixels]
