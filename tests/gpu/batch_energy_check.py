"""GPU check (issue 29): energy per image at batch 1, 2 and 8, for the SD3-medium-sized pipeline with
random weights (`sd3_medium_check.build_pipeline`), 512 px, 28 steps. What it costs per image to
generate in small calls is what an evidence policy that evaluates candidates in small batches
pays; the energy bounds take it as `batch_ratio` (`api.bounds.energy_bounds`).

Not part of the test suite (no GPU in CI; `tests/worker/test_gpu_builders.py` runs it shrunk on the
CPU so that it cannot rot). On a GPU machine, in well under 10 minutes:

    PYTHONPATH=operator:worker python tests/gpu/batch_energy_check.py [--out batch-energy.json]

It needs what `sd3_medium_check.py` needs (accelerate for the research configuration's offload).

How it measures, with the worker's own meter (`worker.energy.EnergyMonitor`: GPU by NVML's energy
counter, CPU by RAPL where the kernel exposes it, else estimated from CPU time):
- per batch size, one call of that size first, outside every window (kernels, allocator, autotuning);
- then `--repeats` windows (at least 5), each `--window-images` images (8) made in calls of that
  batch size, with the device synchronised at both ends of the window;
- per batch size: mean seconds and GPU and CPU joules per image over the windows, the coefficient
  of variation of GPU J per image across windows, and GPU J per image over batch 8's.
Then, beside it in the same run: the research code's configuration (fp16, sequential CPU offload,
batch 1) at the same setting (`--no-research` skips it), and one batch-1 row at 1024 px, 28 steps,
for comparison with ML.ENERGY's published figure for SD3.5-medium on an H100 (1,581 J per image: a
different, larger model, so context rather than a target).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "worker"), str(REPO)]

from sustaindiffusion.worker.energy import CpuEnergyMeter, EnergyMonitor, open_gpu_meter  # noqa: E402
from tests.gpu.sd3_medium_check import NEGATIVE, PROMPT, build_pipeline  # noqa: E402

ML_ENERGY_SD35_MEDIUM_H100_J = 1581.0  # SD3.5-medium, 1024 px, 28 steps, per image (published)


@dataclass(frozen=True)
class Setting:
    size: int = 512
    steps: int = 28
    guidance: float = 7.0


@dataclass(frozen=True)
class BatchRow:
    config: str
    px: int
    steps: int
    batch: int
    windows: int
    images_per_window: int
    seconds_per_image: float
    gpu_joules_per_image: float
    cpu_joules_per_image: float
    gpu_cv: float  # coefficient of variation of GPU J per image across windows
    gpu_method: str
    cpu_method: str


def generate(pipeline: Any, setting: Setting, batch: int, seed: int, device: str) -> None:
    """One call of `batch` images, each from its own seed."""
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]
    pipeline(
        [PROMPT] * batch,
        negative_prompt=[NEGATIVE] * batch,
        num_inference_steps=setting.steps,
        guidance_scale=setting.guidance,
        width=setting.size,
        height=setting.size,
        generator=generators,
        output_type="np",
    )


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample SD over mean (0 for fewer than two values or a zero mean)."""
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean else 0.0


def measure_batch(
    pipeline: Any,
    monitor: EnergyMonitor,
    setting: Setting,
    batch: int,
    repeats: int,
    window_images: int,
    device: str,
    config: str = "ours",
) -> BatchRow:
    """A warm-up call, then `repeats` windows of `window_images` images in calls of `batch`."""
    calls = max(1, -(-window_images // batch))
    generate(pipeline, setting, batch, 10_000, device)  # warm-up, outside every window
    seconds, gpu, cpu = [], [], []
    for repeat in range(repeats):
        with monitor.window() as result:
            for call in range(calls):
                generate(pipeline, setting, batch, (repeat * calls + call) * batch, device)
        window = result.value
        assert window is not None
        images = calls * batch
        seconds.append(window.seconds / images)
        gpu.append(window.gpu.joules / images)
        cpu.append(window.cpu.joules / images)
    gpu_method, cpu_method = monitor.methods
    return BatchRow(
        config=config,
        px=setting.size,
        steps=setting.steps,
        batch=batch,
        windows=repeats,
        images_per_window=calls * batch,
        seconds_per_image=statistics.fmean(seconds),
        gpu_joules_per_image=statistics.fmean(gpu),
        cpu_joules_per_image=statistics.fmean(cpu),
        gpu_cv=coefficient_of_variation(gpu),
        gpu_method=gpu_method,
        cpu_method=cpu_method,
    )


def table(rows: Sequence[BatchRow]) -> list[str]:
    reference: dict[tuple[str, int, int], float] = {}
    for r in sorted(rows, key=lambda r: r.batch):
        reference[(r.config, r.px, r.steps)] = r.gpu_joules_per_image  # the largest batch's, last
    lines = [
        f"{'config':<9} {'px':>5} {'steps':>5} {'batch':>5} {'windows':>7} {'s/img':>7} "
        f"{'GPU J/img':>9} {'CV':>6} {'CPU J/img':>9} {'vs largest batch':>16}"
    ]
    for r in rows:
        largest = reference.get((r.config, r.px, r.steps))
        ratio = f"{r.gpu_joules_per_image / largest:.2f}x" if largest else "-"
        lines.append(
            f"{r.config:<9} {r.px:>5} {r.steps:>5} {r.batch:>5} {r.windows:>3} x {r.images_per_window:<2} "
            f"{r.seconds_per_image:>7.3f} {r.gpu_joules_per_image:>9.1f} {r.gpu_cv:>6.1%} "
            f"{r.cpu_joules_per_image:>9.1f} {ratio:>16}"
        )
    return lines


def run(
    device: str,
    batches: Sequence[int],
    repeats: int,
    window_images: int,
    research: bool,
    large: bool,
    build: Any = build_pipeline,
    setting: Setting = Setting(),
) -> list[BatchRow]:
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    monitor = EnergyMonitor(open_gpu_meter() if device == "cuda" else None, CpuEnergyMeter(), synchronize)
    ours = build(torch.bfloat16 if device == "cuda" else torch.float32, device)
    rows = []
    for batch in batches:
        rows.append(measure_batch(ours, monitor, setting, batch, repeats, window_images, device))
        print(table(rows)[-1], flush=True)
    if large:
        big = Setting(1024, setting.steps, setting.guidance)
        rows.append(measure_batch(ours, monitor, big, 1, max(2, repeats // 2), 2, device))
        print(table(rows)[-1], flush=True)
    del ours
    if device == "cuda":
        torch.cuda.empty_cache()
    if research:
        offloaded = build(torch.float16, "cpu")
        if device == "cuda":
            offloaded.enable_sequential_cpu_offload()
        rows.append(measure_batch(offloaded, monitor, setting, 1, 2, 1, device, config="research"))
        print(table(rows)[-1], flush=True)
    return rows


def summary(rows: Sequence[BatchRow]) -> list[str]:
    """The table, each batch against the largest, the research configuration against our smallest
    batch (GPU + CPU), and the 1024 px row beside ML.ENERGY's figure."""
    ours = [r for r in rows if r.config == "ours" and r.px == rows[0].px]  # the batch sizes' setting
    largest, smallest = max(ours, key=lambda r: r.batch), min(ours, key=lambda r: r.batch)
    lines = [*table(rows)]
    for r in ours:
        if largest.gpu_joules_per_image > 0:  # 0 without a GPU (the CPU test)
            ratio = r.gpu_joules_per_image / largest.gpu_joules_per_image
            lines.append(f"batch {r.batch}: {ratio:.2f}x batch {largest.batch}'s GPU J/img")
    for r in rows:
        if r.config == "research":
            ratio = (r.gpu_joules_per_image + r.cpu_joules_per_image) / (
                smallest.gpu_joules_per_image + smallest.cpu_joules_per_image
            )
            lines.append(
                f"research (fp16, sequential CPU offload): {ratio:.1f}x our GPU+CPU J/img at batch 1"
            )
        elif r.px != rows[0].px:
            lines.append(
                f"{r.px} px, {r.steps} steps, batch {r.batch}: {r.gpu_joules_per_image:.0f} GPU J/img; "
                f"ML.ENERGY's SD3.5-medium on an H100: {ML_ENERGY_SD35_MEDIUM_H100_J:.0f} J/img"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--repeats", type=int, default=5, help="windows per batch size (at least 5)")
    parser.add_argument("--window-images", type=int, default=8, help="images in each window")
    parser.add_argument("--no-research", action="store_true", help="skip the research configuration")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats: at least 5 windows per batch size")
    if any(b < 1 for b in args.batches) or args.window_images < 1:
        parser.error("batch sizes and --window-images are at least 1")
    if not torch.cuda.is_available():
        sys.exit("this check needs a CUDA GPU (tests/worker/test_gpu_builders.py runs it shrunk on the CPU)")
    print(f"GPU: {torch.cuda.get_device_name(0)}; {Setting().size} px, {Setting().steps} steps")
    print(table([])[0])
    rows = run("cuda", args.batches, args.repeats, args.window_images, not args.no_research, large=True)
    print("\n".join(summary(rows)))
    if args.out:
        args.out.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
