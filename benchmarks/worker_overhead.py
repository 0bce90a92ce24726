"""Where a worker pod's time goes: imports and model loading, warm-up, generation and scoring,
for 1, 4 and 16 candidates per pod, on the tiny SD3 model and a small (still random) SD3 model, on
the CPU. Each configuration runs the real worker process, as a pod would, and reads its timings
line; the pod wall time is the process's wall time. Also prints each process's peak memory.

    .venv/bin/python benchmarks/worker_overhead.py [--images 2] [--steps 8]

Target: with 16 candidates per pod on the small model, loading plus warm-up stay under 10% of
the pod's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.contract import worker_command
from sustaindiffusion.api.keywords import DEFAULT_POSITIVE_POOL
from sustaindiffusion.api.spec import ModelSpec, ScoringSpec
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate
from sustaindiffusion.worker.tiny_models import build_tiny_models

MODELS = {"tiny": ("sd3", 64), "small": ("sd3-small", 128)}


def models_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sustaindiffusion" / "benchmark-models"


def make_task(
    directory: Path, models: Path, model: str, size: int, candidates: int, images: int, steps: int
) -> Path:
    settings = [
        CandidateSettings(
            inference_steps=steps,
            guidance_scale=2.0 + 0.5 * i,
            positive_keywords=list(DEFAULT_POSITIVE_POOL[: i % 5]),
            prompt_weight=i % 3,
        )
        for i in range(candidates)
    ]
    task = EvaluationTask(
        search="benchmark",
        generation=1,
        model=ModelSpec(id=str(models / model), width=size, height=size, dtype="float32"),
        prompts=["Photo portrait of a Software Engineer that codes."],
        images_per_prompt=images,
        scoring=ScoringSpec.model_validate(
            {
                "vqaModel": {"id": str(models / "blip-vqa")},
                "quality": {"model": {"id": str(models / "clip")}},
                "humanFilter": {"enabled": True, "maxRetries": 0},
            }
        ),
        candidates=[TaskCandidate(candidate_id=s.candidate_id(), settings=s) for s in settings],
        candidates_per_shard=candidates,
    )
    path = directory / f"task-{model}-{candidates}.json"
    path.write_text(task.model_dump_json(by_alias=True))
    return path


def run_pod(task: Path, directory: Path) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    result = subprocess.run(
        worker_command(
            task,
            program=(sys.executable, "-m", "sustaindiffusion.worker"),
            termination_log=directory / "termination-log",
            device="cpu",
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    line = next(line for line in result.stderr.splitlines() if " timings " in line)
    return wall, json.loads(line.split(" timings ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2, help="images per candidate")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps per image")
    args = parser.parse_args()
    models = models_dir()
    build_tiny_models(models, ("sd3", "sd3-small", "blip-vqa", "clip"))
    print(f"CPU only, {args.images} images x {args.steps} steps per candidate; shares of the pod's wall time")
    columns = [
        ("model", "<6"),
        ("cand.", ">5"),
        ("wall s", ">7"),
        ("start+load", ">10"),
        ("warm-up", ">8"),
        ("generate", ">9"),
        ("score", ">7"),
        ("other", ">6"),
        ("peak MiB", ">9"),
    ]
    header = " ".join(f"{name:{fmt}}" for name, fmt in columns)
    print(header)
    verdict = None
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        for label, (model, size) in MODELS.items():
            for candidates in (1, 4, 16):
                task = make_task(directory, models, model, size, candidates, args.images, args.steps)
                wall, timings = run_pod(task, directory)
                load = wall - (timings["warm_up_s"] + timings["generation_s"] + timings["scoring_s"])
                # "start+load": interpreter start, imports and model loading, i.e. all before warm-up
                start_load = timings["imports_s"] + timings["load_s"]
                other = max(0.0, load - start_load)
                shares = [
                    start_load,
                    timings["warm_up_s"],
                    timings["generation_s"],
                    timings["scoring_s"],
                    other,
                ]
                cells = " ".join(
                    f"{100 * s / wall:>{w}.1f}%" for s, w in zip(shares, (9, 7, 8, 6, 5), strict=True)
                )
                print(f"{label:<6} {candidates:>5} {wall:>7.1f} {cells} {timings['peak_rss_mib']:>9.0f}")
                if label == "small" and candidates == 16:
                    overhead = (start_load + other + timings["warm_up_s"]) / wall
                    verdict = (
                        f"small model, 16 candidates: loading + warm-up = {100 * overhead:.1f}% "
                        "of wall time (target < 10%)"
                    )
    print(verdict)


if __name__ == "__main__":
    main()
