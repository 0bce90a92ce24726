"""GPU check for the other model families: an SDXL-sized and a FLUX.1-sized pipeline with random
weights, built directly on the GPU, generating through the worker's own family adapters (weighted
keywords included), timed and metered with NVML per image.

Not part of the test suite (no GPU in CI; `tests/worker/test_gpu_builders.py` runs the builders
at a reduced size on the CPU so this script cannot rot). Run it on a GPU machine:

    PYTHONPATH=operator:worker python tests/gpu/families_check.py [--quick] [--out families.json]

Needs what `sd3_medium_check.py` needs (tests/gpu/README.md). Models, at full size unless said:
- SDXL base: the UNet (320/640/1280 channels, 1/2/10 transformer layers), CLIP-L, OpenCLIP-G and
  the VAE; 1024 px, classifier-free guidance 5.0, 30 steps;
- FLUX.1: the transformer (19 double and 38 single blocks, 24 heads x 128), CLIP-L, the VAE, and
  T5-XXL at full width with 4 of its 24 layers (as in the SD3 check: it runs once per prompt);
  FLUX.1-dev (guidance embedding, 28 steps, guidance 3.5) and FLUX.1-schnell (4 steps), 1024 px.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "worker"), str(REPO)]

PROMPT = "Photo portrait of a Software Engineer that codes"
KEYWORDS = ["photograph", "film grain"]


@dataclass(frozen=True)
class SdxlSize:
    channels: tuple[int, int, int] = (320, 640, 1280)
    transformer_layers: tuple[int, int, int] = (1, 2, 10)
    head_dims: tuple[int, int, int] = (5, 10, 20)
    clip_l: tuple[int, int] = (768, 12)  # width, layers
    clip_g: tuple[int, int] = (1280, 32)
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    norm_groups: int = 32


@dataclass(frozen=True)
class FluxSize:
    double_layers: int = 19
    single_layers: int = 38
    heads: int = 24
    head_dim: int = 128
    rope: tuple[int, int, int] = (16, 56, 56)
    t5: tuple[int, int, int, int] = (4096, 10240, 4, 64)  # width, feed-forward, layers, heads
    clip_l: tuple[int, int] = (768, 12)
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    norm_groups: int = 32


def _clip(width: int, layers: int, projection: bool, act: str) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: PLC0415

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=max(1, width // 64),
        projection_dim=width,
        hidden_act=act,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _vae(channels: tuple[int, ...], latent: int, groups: int, **config: Any) -> Any:
    from diffusers import AutoencoderKL  # noqa: PLC0415

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=2,
        norm_num_groups=groups,
        **config,
    )


def build_sdxl(dtype: torch.dtype, device: str, size: SdxlSize = SdxlSize()) -> Any:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel  # noqa: PLC0415

    from sustaindiffusion.worker.tiny_models import clip_tokenizer  # noqa: PLC0415

    torch.manual_seed(0)
    cross = size.clip_l[0] + size.clip_g[0]
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=128,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=size.channels,
            layers_per_block=2,
            transformer_layers_per_block=size.transformer_layers,
            attention_head_dim=size.head_dims,
            cross_attention_dim=cross,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=6 * 256 + size.clip_g[0],
            norm_num_groups=size.norm_groups,
        )
        pipeline = StableDiffusionXLPipeline(
            vae=_vae(size.vae_channels, 4, size.norm_groups, scaling_factor=0.13025),
            text_encoder=_clip(*size.clip_l, projection=False, act="quick_gelu"),
            text_encoder_2=_clip(*size.clip_g, projection=True, act="gelu"),
            tokenizer=clip_tokenizer(),
            tokenizer_2=clip_tokenizer(),
            unet=unet,
            scheduler=EulerDiscreteScheduler(
                beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
            ),
        )
    pipeline.to(dtype=dtype)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def build_flux(dtype: torch.dtype, device: str, guidance_embeds: bool, size: FluxSize = FluxSize()) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel  # noqa: PLC0415
    from transformers import T5Config, T5EncoderModel  # noqa: PLC0415

    from sustaindiffusion.worker.tiny_models import clip_tokenizer, t5_tokenizer  # noqa: PLC0415

    torch.manual_seed(0)
    width, feed_forward, layers, heads = size.t5
    with torch.device(device):
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,  # 16 latent channels packed 2 x 2
            num_layers=size.double_layers,
            num_single_layers=size.single_layers,
            attention_head_dim=size.head_dim,
            num_attention_heads=size.heads,
            joint_attention_dim=width,
            pooled_projection_dim=size.clip_l[0],
            guidance_embeds=guidance_embeds,
            axes_dims_rope=size.rope,
        )
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=32128,
                d_model=width,
                d_kv=width // heads,
                d_ff=feed_forward,
                num_layers=layers,
                num_heads=heads,
                feed_forward_proj="gated-gelu",
                is_gated_act=True,
            )
        )
        pipeline = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
            vae=_vae(
                size.vae_channels,
                16,
                size.norm_groups,
                scaling_factor=0.3611,
                shift_factor=0.1159,
                use_quant_conv=False,
                use_post_quant_conv=False,
            ),
            text_encoder=_clip(*size.clip_l, projection=False, act="quick_gelu"),
            tokenizer=clip_tokenizer(),
            text_encoder_2=t5,
            tokenizer_2=t5_tokenizer(max_length=512),
            transformer=transformer,
        )
    pipeline.to(dtype=dtype)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@dataclass(frozen=True)
class Setting:
    name: str
    px: int
    steps: int
    guidance: float
    negative: bool


def generate(pipeline: Any, setting: Setting, seed: int, device: str) -> None:
    """One image through the worker's own family adapter, with weighted keywords."""
    from sustaindiffusion.api.candidate import CandidateSettings  # noqa: PLC0415
    from sustaindiffusion.api.spec import ModelSpec  # noqa: PLC0415
    from sustaindiffusion.worker.generation import ImageGenerator  # noqa: PLC0415

    model = ModelSpec(id="random-weights", width=setting.px, height=setting.px)
    settings = CandidateSettings(
        inference_steps=setting.steps,
        guidance_scale=setting.guidance,
        positive_keywords=KEYWORDS,
        negative_keywords=["lowres"] if setting.negative else [],
        prompt_weight=2,
    )
    ImageGenerator(pipeline, model, device, max_batch=1).generate(settings, PROMPT, [seed])


def measure(pipeline: Any, setting: Setting, images: int, energy: Any, device: str) -> tuple[float, float]:
    """Median seconds and NVML joules per image, after one warm-up image."""
    seconds, joules = [], []
    for seed in range(images + 1):
        torch.cuda.synchronize()
        start_j, start_t = energy.joules(), time.perf_counter()
        generate(pipeline, setting, seed, device)
        torch.cuda.synchronize()
        if seed:
            seconds.append(time.perf_counter() - start_t)
            joules.append(energy.joules() - start_j)
    return statistics.median(seconds), statistics.median(joules)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one family setting each, two images")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this check needs a CUDA GPU")
    from tests.gpu.sd3_medium_check import NvmlEnergy  # noqa: PLC0415

    device, energy = "cuda", NvmlEnergy()
    images = 2 if args.quick else 3
    plans: list[tuple[str, Any, list[Setting]]] = [
        (
            "SDXL",
            lambda: build_sdxl(torch.bfloat16, device),
            [Setting("sdxl-defaults", 1024, 50, 5.0, True), Setting("sdxl-short", 1024, 20, 5.0, True)],
        ),
        (
            "FLUX.1-dev",
            lambda: build_flux(torch.bfloat16, device, guidance_embeds=True),
            [Setting("flux-dev-28", 1024, 28, 3.5, False), Setting("flux-dev-50", 1024, 50, 3.5, False)],
        ),
        (
            "FLUX.1-schnell",
            lambda: build_flux(torch.bfloat16, device, guidance_embeds=False),
            [Setting("flux-schnell-4", 1024, 4, 0.0, False)],
        ),
    ]
    print(f"GPU: {energy.name}")
    print(f"{'setting':<16} {'px':>5} {'steps':>5} {'s/img':>7} {'J/img':>8}")
    rows = []
    for family, build, settings in plans:
        started = time.perf_counter()
        pipeline = build()
        print(f"built the {family}-sized pipeline on the GPU in {time.perf_counter() - started:.0f} s")
        for setting in settings[:1] if args.quick else settings:
            seconds, joules = measure(pipeline, setting, images, energy, device)
            rows.append({"family": family, **setting.__dict__, "s": seconds, "J": joules})
            print(f"{setting.name:<16} {setting.px:>5} {setting.steps:>5} {seconds:>7.2f} {joules:>8.0f}")
        del pipeline
        torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps({"gpu": str(energy.name), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
