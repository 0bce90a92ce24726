"""A stand-in for `sustaindiffusion-worker run`: same command line and report, no ML stack.

It reads the task, takes its shard's candidates and answers in milliseconds with the deterministic
synthetic metrics of `tests.support.fake_evaluator`, written to the termination-message file as the
real worker does. Tests use it where the cost measured or compared is the operator's (parity of the
two runtimes, scale), not the worker's. Run it as a script: it puts its repository on sys.path.

    python tests/support/standin_worker.py run --task TASK.json [--shard N] [--termination-log PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sustaindiffusion.api import contract
from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.results import Device
from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.api.wire import ShardReport, encode_report
from tests.support.fake_evaluator import fake_task_result

if TYPE_CHECKING:
    from sustaindiffusion.search.ledger import Candidate

PROGRAM = (sys.executable, str(Path(__file__).resolve()))


@dataclass(frozen=True)
class _Member:
    """What the fake evaluator reads of a Candidate, without importing the search (and pymoo):
    a stand-in that starts in a quarter second lets scale tests run hundreds of pods."""

    candidate_id: str
    generation: int
    settings: CandidateSettings
    baseline: str | None = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="standin-worker")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run")
    run.add_argument(contract.OPTION_TASK, type=Path, required=True)
    run.add_argument(contract.OPTION_SHARD, type=int, default=None)
    run.add_argument(
        contract.OPTION_TERMINATION_LOG,
        type=Path,
        default=Path(os.environ.get(contract.TERMINATION_MESSAGE_ENV, contract.TERMINATION_MESSAGE_PATH)),
    )
    # Accepted and ignored, as the real worker's options.
    for option in (
        contract.OPTION_ARTIFACTS,
        contract.OPTION_METRICS_PORT,
        contract.OPTION_METRICS_ADDRESS,
        contract.OPTION_DEVICE,
        contract.OPTION_MODELS_BASE,
    ):
        run.add_argument(option, default=None)
    args = parser.parse_args(argv)
    shard = args.shard if args.shard is not None else int(os.environ.get(contract.SHARD_ENV, "0"))
    task = EvaluationTask.model_validate_json(args.task.read_text())
    results = [
        fake_task_result(
            cast("Candidate", _Member(member.candidate_id, task.generation, member.settings)), task
        )
        for member in task.shard(shard)
    ]
    report = ShardReport(
        generation=task.generation, shard=shard, results=results, device=Device(name="standin")
    )
    args.termination_log.parent.mkdir(parents=True, exist_ok=True)
    args.termination_log.write_text(encode_report(report))
    for result in results:
        print(f"candidate {result.candidate_id}: {result.status.value}", file=sys.stderr)
    return contract.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
