"""The GPU check's SDXL- and FLUX.1-sized builders (`tests/gpu/families_check.py`), shrunk and run
on the CPU, so the script a GPU machine runs cannot rot: each pipeline builds, is recognised as its
family, and generates an image with weighted keywords through the worker's adapter."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from sustaindiffusion.api.families import ModelFamily
from sustaindiffusion.worker.families import adapter_for


@pytest.fixture(scope="module")
def check() -> ModuleType:
    from tests.gpu import families_check  # noqa: PLC0415 - builds nothing until called

    return families_check


def test_the_sdxl_builder_makes_an_sdxl_pipeline_that_generates(check: ModuleType) -> None:
    size = check.SdxlSize(
        channels=(16, 32, 32),
        transformer_layers=(1, 1, 1),
        head_dims=(2, 4, 4),
        clip_l=(32, 1),
        clip_g=(48, 1),
        vae_channels=(8, 8),
        norm_groups=8,
    )
    pipeline = check.build_sdxl(torch.float32, "cpu", size)
    assert adapter_for(pipeline).family is ModelFamily.STABLE_DIFFUSION_XL
    check.generate(pipeline, check.Setting("smoke", 64, 2, 5.0, True), 0, "cpu")


@pytest.mark.parametrize(
    ("guidance_embeds", "family"), [(True, ModelFamily.FLUX1_DEV), (False, ModelFamily.FLUX1_SCHNELL)]
)
def test_the_flux_builder_makes_a_flux_pipeline_that_generates(
    check: ModuleType, guidance_embeds: bool, family: ModelFamily
) -> None:
    size = check.FluxSize(
        double_layers=1,
        single_layers=1,
        heads=2,
        head_dim=16,
        rope=(4, 4, 8),
        t5=(32, 64, 1, 2),
        clip_l=(32, 1),
        vae_channels=(8, 8),
        norm_groups=4,
    )
    pipeline = check.build_flux(torch.float32, "cpu", guidance_embeds, size)
    assert adapter_for(pipeline).family is family
    check.generate(pipeline, check.Setting("smoke", 64, 2, 3.5 if guidance_embeds else 0.0, False), 0, "cpu")
