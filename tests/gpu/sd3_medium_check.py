"""GPU check: an SD3-medium-sized pipeline with random weights, built directly on the GPU, timed and
metered with NVML, next to the research code's configuration, and compared with the compute floor.

Not part of the test suite (no GPU in CI). Run it on a GPU machine:

    PYTHONPATH=operator:worker python tests/gpu/sd3_medium_check.py [--quick] [--out results.json]

Needs: torch with CUDA, diffusers, transformers, tokenizers, accelerate (for the research
configuration's sequential CPU offload), nvidia-ml-py, pydantic, pyyaml, psutil. No network: the
weights are random and the tokenizers are trained here (tests/gpu/README.md says how to carry the
wheels to a machine that lacks them).

What it measures, per setting (resolution x steps), one image at a time:
- ours: bf16, everything on the GPU, no offload (what the worker does);
- research: fp16 with sequential CPU offload (the research code's configuration), fewer settings,
  since it is slow by design;
- the compute floor: FLOPs per image counted by torch's FlopCounterMode on the real modules (the
  transformer at the setting's token count, both halves of classifier-free guidance, the VAE
  decoder) divided by this GPU's measured dense bf16 matmul throughput.
Model: the SD3-medium MMDiT (24 layers, 24 heads x 64, 16 latent channels) and VAE at full size;
CLIP-L and CLIP-G at full size; T5-XXL at full width with 4 of its 24 layers (a documented
reduction: T5 runs once per prompt, not per step, so it barely moves time per image, and its
4.7 B parameters would dominate the set-up time of a short check).
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
sys.path[:0] = [str(REPO / "operator"), str(REPO / "worker")]

PROMPT = "Photo portrait of a Software Engineer that codes, photograph, film grain"
NEGATIVE = "lowres, watermark"


@dataclass(frozen=True)
class Sd3Size:
    """The pipeline's sizes: SD3-medium's by default; tests build it shrunk on the CPU."""

    layers: int = 24
    heads: int = 24
    head_dim: int = 64
    pooled: int = 2048  # CLIP-L's and CLIP-G's projections side by side
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    norm_groups: int = 32
    clip_l: tuple[int, int, int] = (768, 12, 12)  # width, layers, heads
    clip_g: tuple[int, int, int] = (1280, 32, 20)
    t5: tuple[int, int, int, int] = (4096, 10240, 4, 64)  # width, feed-forward, layers, heads


def _clip(width: int, layers: int, heads: int, act: str) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection  # noqa: PLC0415

    return CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            projection_dim=width,
            hidden_act=act,
        )
    )


def build_pipeline(dtype: torch.dtype, device: str, size: Sd3Size = Sd3Size()) -> Any:
    from diffusers import (  # noqa: PLC0415
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import T5Config, T5EncoderModel  # noqa: PLC0415

    from sustaindiffusion.worker.tiny_models import clip_tokenizer, t5_tokenizer  # noqa: PLC0415

    t5_width, t5_feed_forward, t5_layers, t5_heads = size.t5
    torch.manual_seed(0)
    with torch.device(device):
        transformer = SD3Transformer2DModel(
            sample_size=128,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=size.layers,
            attention_head_dim=size.head_dim,
            num_attention_heads=size.heads,
            joint_attention_dim=t5_width,
            caption_projection_dim=size.heads * size.head_dim,
            pooled_projection_dim=size.pooled,
            pos_embed_max_size=192,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=16,
            down_block_types=("DownEncoderBlock2D",) * len(size.vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(size.vae_channels),
            block_out_channels=size.vae_channels,
            layers_per_block=2,
            norm_num_groups=size.norm_groups,
            sample_size=1024,
            scaling_factor=1.5305,
            shift_factor=0.0609,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
        clip_l = _clip(*size.clip_l, act="quick_gelu")
        clip_g = _clip(*size.clip_g, act="gelu")
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=32128,
                d_model=t5_width,
                d_kv=64,
                d_ff=t5_feed_forward,
                num_layers=t5_layers,
                num_heads=t5_heads,
                feed_forward_proj="gated-gelu",
                is_gated_act=True,
            )
        )
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=clip_l,
        tokenizer=clip_tokenizer(),
        text_encoder_2=clip_g,
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5,
        tokenizer_3=t5_tokenizer(),
    )
    pipeline.to(dtype=dtype)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def matmul_tflops(device: str) -> float:
    """Dense bf16 matmul throughput of this GPU, measured."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    runs, started = 20, time.perf_counter()
    for _ in range(runs):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * runs / (time.perf_counter() - started) / 1e12


def flops_per_image(pipeline: Any, size: int, steps: int, device: str) -> float:
    """FLOPs of one image: transformer x steps x 2 (guidance halves) + VAE decode, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    latent = size // 8
    dtype = pipeline.transformer.dtype
    with torch.no_grad():
        hidden = torch.randn(2, 16, latent, latent, device=device, dtype=dtype)
        text = torch.randn(2, 77 + 256, 4096, device=device, dtype=dtype)
        pooled = torch.randn(2, 2048, device=device, dtype=dtype)
        timestep = torch.tensor([500.0, 500.0], device=device)
        with FlopCounterMode(display=False) as counter:
            pipeline.transformer(
                hidden_states=hidden, encoder_hidden_states=text, pooled_projections=pooled, timestep=timestep
            )
        transformer_flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            pipeline.vae.decode(hidden[:1].to(pipeline.vae.dtype))
        vae_flops = counter.get_total_flops()
    return float(transformer_flops * steps + vae_flops)


class NvmlEnergy:
    def __init__(self) -> None:
        import pynvml  # noqa: PLC0415

        pynvml.nvmlInit()
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        self.name = pynvml.nvmlDeviceGetName(self.handle)

    def joules(self) -> float:
        return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)) / 1000.0


def measure(pipeline: Any, size: int, steps: int, images: int, energy: NvmlEnergy) -> tuple[float, float]:
    """Median seconds and NVML joules per image over `images` single-image generations."""
    seconds, joules = [], []
    for seed in range(images + 1):
        generator = torch.Generator("cpu").manual_seed(seed)
        torch.cuda.synchronize()
        start_j, start_t = energy.joules(), time.perf_counter()
        pipeline(
            PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=steps,
            guidance_scale=7.0,
            width=size,
            height=size,
            generator=generator,
            output_type="np",
        )
        torch.cuda.synchronize()
        if seed == 0:
            continue  # warm-up: kernels, allocator, autotuning
        seconds.append(time.perf_counter() - start_t)
        joules.append(energy.joules() - start_j)
    return statistics.median(seconds), statistics.median(joules)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer settings and images")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this check needs a CUDA GPU")
    device = "cuda"
    energy = NvmlEnergy()
    tflops = matmul_tflops(device)
    print(f"GPU: {energy.name}; measured dense bf16 matmul: {tflops:.0f} TFLOP/s")
    settings = (
        [(512, 25), (512, 50), (1024, 25)]
        if args.quick
        else [(512, 15), (512, 25), (512, 50), (1024, 25), (1024, 50)]
    )
    images = 2 if args.quick else 3
    started = time.perf_counter()
    ours = build_pipeline(torch.bfloat16, device)
    print(f"built the SD3-medium-sized pipeline on the GPU in {time.perf_counter() - started:.0f} s")
    rows = []
    print(f"{'config':<9} {'px':>5} {'steps':>5} {'s/img':>7} {'J/img':>8} {'floor s':>8} {'x floor':>8}")
    for size, steps in settings:
        floor = flops_per_image(ours, size, steps, device) / (tflops * 1e12)
        seconds, joules = measure(ours, size, steps, images, energy)
        rows.append(
            {"config": "ours", "px": size, "steps": steps, "s": seconds, "J": joules, "floor_s": floor}
        )
        print(
            f"{'ours':<9} {size:>5} {steps:>5} {seconds:>7.2f} {joules:>8.0f} "
            f"{floor:>8.2f} {seconds / floor:>8.2f}"
        )
    del ours
    torch.cuda.empty_cache()
    research = build_pipeline(torch.float16, "cpu")
    research.enable_sequential_cpu_offload()
    for size, steps in [(512, 25)]:
        seconds, joules = measure(research, size, steps, 1, energy)
        rows.append({"config": "research", "px": size, "steps": steps, "s": seconds, "J": joules})
        print(f"{'research':<9} {size:>5} {steps:>5} {seconds:>7.2f} {joules:>8.0f}")
    ours_512 = next(r for r in rows if r["config"] == "ours" and (r["px"], r["steps"]) == (512, 25))
    research_512 = next(r for r in rows if r["config"] == "research")
    print(
        f"512 px, 25 steps: ours {ours_512['s'] / ours_512['floor_s']:.2f}x the floor (target <= 2x); "
        f"research uses {research_512['J'] / ours_512['J']:.1f}x our energy per image (target >= 5x)"
    )
    if args.out:
        args.out.write_text(json.dumps({"gpu": str(energy.name), "tflops": tflops, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
