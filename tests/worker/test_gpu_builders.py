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


def test_the_batch_energy_check_meters_each_batch_size_in_windows_of_whole_calls() -> None:
    from tests.gpu import batch_energy_check, sd3_medium_check  # noqa: PLC0415

    size = sd3_medium_check.Sd3Size(
        layers=1,
        heads=2,
        head_dim=8,
        pooled=32 + 48,
        vae_channels=(8, 8),
        norm_groups=4,
        clip_l=(32, 1, 2),
        clip_g=(48, 1, 2),
        t5=(128, 64, 1, 2),
    )

    def build(dtype: torch.dtype, device: str) -> object:
        return sd3_medium_check.build_pipeline(dtype, device, size)

    rows = batch_energy_check.run(
        "cpu",
        [1, 2],
        2,
        3,
        research=False,
        large=False,
        build=build,
        setting=batch_energy_check.Setting(64, 2),
    )
    # Windows hold whole calls: 3 images at batch 1, 4 (two calls) at batch 2.
    assert [(r.batch, r.windows, r.images_per_window) for r in rows] == [(1, 2, 3), (2, 2, 4)]
    assert all(r.seconds_per_image > 0 and r.cpu_joules_per_image > 0 for r in rows)
    assert all(r.gpu_joules_per_image == 0 and r.gpu_method == "none" for r in rows)  # no GPU here
    lines = batch_energy_check.summary(rows)
    assert [line.split()[3] for line in lines[1:]] == ["1", "2"]  # a table row per batch size
