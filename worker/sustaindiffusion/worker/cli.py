"""The worker's command line (`sustaindiffusion-worker`, or `python -m sustaindiffusion.worker`).

    sustaindiffusion-worker run --task TASK.json [--shard N] [--termination-log PATH]
                                [--artifacts DIR] [--metrics-port PORT] [--device auto|cpu|cuda]
    sustaindiffusion-worker build-tiny-models DIR

`run` evaluates one shard of a task (the shard defaults to $JOB_COMPLETION_INDEX, as an Indexed Job
sets it) and leaves a compact report in the termination-message file, which is all that leaves
the pod: workers need no Kubernetes credentials. Exit codes: 0 every candidate has a result
(failures included), 2 the task cannot succeed as written, 75 a transient problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from sustaindiffusion.api import contract
from sustaindiffusion.api.contract import EXIT_OK, EXIT_PERMANENT, EXIT_RETRYABLE
from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.api.wire import ReportTooLargeError, ShardReport, encode_report
from sustaindiffusion.worker.errors import PermanentTaskError

log = logging.getLogger("sustaindiffusion.worker")

PROCESS_STARTED = time.perf_counter()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sustaindiffusion-worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="evaluate one shard of a task")
    run.add_argument(contract.OPTION_TASK, type=Path, required=True, help="task JSON written by the operator")
    run.add_argument(
        contract.OPTION_SHARD,
        type=int,
        default=None,
        help=f"shard index (default: ${contract.SHARD_ENV} or 0)",
    )
    run.add_argument(
        contract.OPTION_TERMINATION_LOG,
        type=Path,
        default=Path(os.environ.get(contract.TERMINATION_MESSAGE_ENV, contract.TERMINATION_MESSAGE_PATH)),
        help=f"where the report goes (default: ${contract.TERMINATION_MESSAGE_ENV} or "
        f"{contract.TERMINATION_MESSAGE_PATH})",
    )
    run.add_argument(
        contract.OPTION_ARTIFACTS, type=Path, default=None, help="directory for per-image records and images"
    )
    run.add_argument(
        contract.OPTION_METRICS_PORT, type=int, default=None, help="serve live metrics on this port"
    )
    run.add_argument(
        contract.OPTION_METRICS_ADDRESS, default="0.0.0.0", help="address to serve metrics on (the pod IP)"
    )
    run.add_argument(contract.OPTION_DEVICE, default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument(
        contract.OPTION_MODELS_BASE,
        type=Path,
        default=None,
        help="folder that relative local model paths are resolved against (default: the task's folder)",
    )
    tiny = commands.add_parser("build-tiny-models", help="build tiny random-weight models offline")
    tiny.add_argument("directory", type=Path)
    tiny.add_argument(
        "--families",
        action="store_true",
        help="also build one tiny pipeline per further model family (sdxl, sd35, flux-dev, flux-schnell)",
    )
    return parser


def _write_report(path: Path, report: ShardReport) -> None:
    try:
        text = encode_report(report)
    except ReportTooLargeError as error:
        report.results, report.fatal = [], str(error)
        text = encode_report(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def run(args: argparse.Namespace) -> int:
    shard = args.shard if args.shard is not None else int(os.environ.get(contract.SHARD_ENV, "0"))
    report = ShardReport(generation=0, shard=shard)
    try:
        task = EvaluationTask.model_validate_json(args.task.read_text())
        report.generation = task.generation
        candidates = task.shard(shard)
    except (OSError, ValidationError, ValueError) as error:
        report.fatal = f"invalid task {args.task}: {error}".replace("\n", " ")
        _write_report(args.termination_log, report)
        log.error("%s", report.fatal)
        return EXIT_PERMANENT
    try:
        outcome = _evaluate(task, candidates, args, report)
    except PermanentTaskError as error:
        report.fatal = str(error)
        _write_report(args.termination_log, report)
        log.error("%s", error)
        return EXIT_PERMANENT
    except Exception as error:
        report.fatal = f"{type(error).__name__}: {error}"
        _write_report(args.termination_log, report)
        log.exception("worker failed")
        return EXIT_RETRYABLE
    _write_report(args.termination_log, report)
    return outcome


def _evaluate(task: EvaluationTask, candidates: list, args: argparse.Namespace, report: ShardReport) -> int:  # type: ignore[type-arg]
    # Heavy imports here, so `--help` and task errors answer at once.
    from diffusers.utils import logging as diffusers_logging  # noqa: PLC0415
    from transformers.utils import logging as transformers_logging  # noqa: PLC0415

    from sustaindiffusion.worker.detectors import load_detectors  # noqa: PLC0415
    from sustaindiffusion.worker.energy import CpuEnergyMeter, EnergyMonitor, open_gpu_meter  # noqa: PLC0415
    from sustaindiffusion.worker.evaluate import Evaluator  # noqa: PLC0415
    from sustaindiffusion.worker.generation import (  # noqa: PLC0415
        ImageGenerator,
        choose_device,
        load_pipeline,
        resolve_model_path,
    )
    from sustaindiffusion.worker.live_metrics import WorkerMetrics  # noqa: PLC0415
    from sustaindiffusion.worker.scoring import load_quality_scorer  # noqa: PLC0415

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    base = args.models_base or args.task.resolve().parent
    metrics = WorkerMetrics(task.search, task.generation)
    if args.metrics_port:
        try:
            metrics.serve(args.metrics_port, args.metrics_address)
        except OSError as error:  # e.g. host networking with another worker on the port
            log.warning("live metrics disabled: port %s unavailable (%s)", args.metrics_port, error)
    device = choose_device(args.device)
    started = time.perf_counter()
    log.info("loading the model %s on %s", task.model.id, device)
    pipeline = load_pipeline(task.model, device, base)
    generator = ImageGenerator(pipeline, task.model, device)
    token = os.environ.get("HF_TOKEN") or None
    try:
        detector, cross_check = load_detectors(task.scoring, device, base, token)
        quality_spec = task.scoring.quality
        quality_model = quality_spec.model
        quality = load_quality_scorer(
            quality_spec.scorer.value,
            resolve_model_path(quality_model.id, base) if quality_model else None,
            quality_model.revision if quality_model else None,
            device,
            token,
        )
    except OSError as error:
        raise PermanentTaskError(f"cannot load a scoring model: {str(error).splitlines()[0]}") from error
    loaded = time.perf_counter()
    log.info("models loaded in %.1f s", loaded - started)
    monitor = EnergyMonitor(open_gpu_meter(), CpuEnergyMeter(), synchronize=generator.synchronize)
    report.device = monitor.device()
    monitor.listeners.append(metrics.record_window)
    metrics.watch_power(monitor)
    generator.warm_up()
    warmed = time.perf_counter()
    evaluator = Evaluator(
        task,
        generator,
        detector,
        quality,
        monitor,
        args.artifacts,
        on_images=metrics.images.inc,
        cross_check=cross_check,
    )
    for index, candidate in enumerate(candidates):
        metrics.current.set(index)
        log.info("candidate %s: evaluating (%d of %d)", candidate.candidate_id, index + 1, len(candidates))
        outcome = evaluator.evaluate(candidate)
        metrics.record_outcome(outcome.result.ok)
        report.results.append(outcome.result)
        report.retryable[candidate.candidate_id] = outcome.retryable
        log.info("candidate %s: %s", candidate.candidate_id, outcome.result.status.value)
    timings = {
        "imports_s": round(started - PROCESS_STARTED, 3),
        "load_s": round(loaded - started, 3),
        "warm_up_s": round(warmed - loaded, 3),
        "generation_s": round(evaluator.generation_seconds, 3),
        "scoring_s": round(evaluator.evaluation_seconds - evaluator.generation_seconds, 3),
        "candidates": len(candidates),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    log.info("timings %s", json.dumps(timings))
    metrics.stop()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    if args.command == "build-tiny-models":
        from sustaindiffusion.worker.tiny_models import (  # noqa: PLC0415
            TINY_FAMILY_NAMES,
            TINY_MODEL_NAMES,
            build_tiny_models,
        )

        names = TINY_MODEL_NAMES + (TINY_FAMILY_NAMES if args.families else ())
        for name, path in build_tiny_models(args.directory, names).items():
            print(f"{name}: {path}")
        return EXIT_OK
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
