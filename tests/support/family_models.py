"""The tiny pipeline of each model family (`sustaindiffusion.worker.families`), by its folder name
under the tiny models, and the model spec that loads it."""

from __future__ import annotations

from pathlib import Path

from sustaindiffusion.api.spec import ModelSpec

FAMILY_MODELS = ("sd1", "sdxl", "sd3", "sd35", "flux-dev", "flux-schnell")


def family_model(tiny_models: Path, name: str) -> ModelSpec:
    return ModelSpec(id=str(tiny_models / name), width=64, height=64, dtype="float32")
