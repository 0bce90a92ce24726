"""Fixtures for worker tests: the tiny models, loaded through the real from_pretrained path."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sustaindiffusion.api.spec import ModelSpec
from tests.support.family_models import family_model
from tests.support.tiny import ensure_tiny_models


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    return ensure_tiny_models()


@pytest.fixture(scope="session")
def sd3_model(tiny_models: Path) -> ModelSpec:
    return ModelSpec(id=str(tiny_models / "sd3"), width=64, height=64, dtype="float32")


@pytest.fixture(scope="session")
def sd3_pipeline(sd3_model: ModelSpec) -> Any:
    from sustaindiffusion.worker.generation import load_pipeline  # noqa: PLC0415

    return load_pipeline(sd3_model, "cpu")


@pytest.fixture(scope="session")
def sd1_model(tiny_models: Path) -> ModelSpec:
    return ModelSpec(id=str(tiny_models / "sd1"), width=64, height=64, dtype="float32")


@pytest.fixture(scope="session")
def sd1_pipeline(sd1_model: ModelSpec) -> Any:
    from sustaindiffusion.worker.generation import load_pipeline  # noqa: PLC0415

    return load_pipeline(sd1_model, "cpu")


@pytest.fixture(scope="session")
def family_pipeline(tiny_models: Path) -> Callable[[str], Any]:
    """Loads a family's tiny pipeline on first use, once per session."""
    from sustaindiffusion.worker.generation import load_pipeline  # noqa: PLC0415

    @functools.cache
    def load(name: str) -> Any:
        return load_pipeline(family_model(tiny_models, name), "cpu")

    return load
