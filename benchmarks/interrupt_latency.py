"""How quickly Ctrl-C stops `sustaindiffusion run`, at each point of a local search, and that nothing
is lost: the time from SIGINT to the process's exit, whether a worker process outlived it, and
whether the same command then resumes to the end with every result archived before kept.

    .venv/bin/python benchmarks/interrupt_latency.py [--repeats 3] [--signal INT|TERM]

The search is the quickstart's (tiny offline models, CPU) with screening on. Each point is one the
run reports in its output directory (tests/support/local_runs.py), never a guessed delay:

  model loading   a worker of generation 1 logged "loading the model" (inside `import torch`, then
                  the pipeline's load)
  generation      a worker of generation 1 logged "evaluating" (generating and scoring images)
  screening       a screening pass's first result was archived
  validation      the held-out validation's task was written (its workers start)
  writing         the first result of generation 2 was archived (the run is writing its archive
                  and status)
"""

from __future__ import annotations

import argparse
import functools
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sustaindiffusion.local.store import RunStore
from tests.support.local_runs import (
    CLI,
    archived_stages,
    generation_archived,
    held_out_task_launched,
    run_and_interrupt,
    worker_logged,
)
from tests.support.tiny import ensure_tiny_models

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"


POINTS: dict[str, Callable[[Path], bool]] = {
    "model loading": lambda out: worker_logged(out, "loading the model", generation=1),
    "generation": lambda out: worker_logged(out, "evaluating", generation=1),
    "screening": lambda out: "screen" in archived_stages(out),
    "validation": held_out_task_launched,
    "writing": lambda out: generation_archived(out, 2),
}


def spec_file(directory: Path) -> Path:
    (directory / "tiny-models").symlink_to(ensure_tiny_models())
    manifest = yaml.safe_load(QUICKSTART.read_text())
    manifest["spec"]["algorithm"] |= {
        "populationSize": 4,
        "generations": 2,
        "screening": {"imagesPerPrompt": 1, "confidence": 0.8},
    }
    manifest["spec"]["execution"]["candidatesPerPod"] = 2
    path = directory / "search.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--signal", choices=("INT", "TERM"), default="INT")
    args = parser.parse_args(argv)
    sig = signal.SIGINT if args.signal == "INT" else signal.SIGTERM
    print(f"SIG{args.signal} to `sustaindiffusion run` (tiny models, CPU), {args.repeats} repeats per point")
    print(f"{'point':<15} {'exit code':>9} {'to exit (s)':>22} {'workers left':>12} {'resumed, kept':>14}")
    for point, reached in POINTS.items():
        seconds, codes, left, kept = [], set(), 0, 0
        for _ in range(args.repeats):
            directory = Path(tempfile.mkdtemp(prefix="sd-interrupt-"))
            try:
                spec, out = spec_file(directory), directory / "out"
                stopped = run_and_interrupt(spec, out, functools.partial(reached, out), point, sig)
                seconds.append(stopped.seconds_to_exit)
                codes.add(stopped.returncode)
                left += len(stopped.workers_left)
                before = [record.key for record in RunStore(out).records()]
                resumed = subprocess.run(
                    [*CLI, "run", str(spec), "--out", str(out)], capture_output=True, text=True, check=False
                )
                after = [record.key for record in RunStore(out).records()]
                kept += resumed.returncode == 0 and after[: len(before)] == before
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        spread = f"{statistics.median(seconds):.2f} (max {max(seconds):.2f})"
        print(
            f"{point:<15} {','.join(map(str, sorted(codes))):>9} {spread:>22} {left:>12} "
            f"{kept:>9}/{args.repeats}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
