"""What the operator (or the local runner) and the worker process must agree on, in one place.

The worker's command line, its exit codes and where its report goes. The report itself (the
results schema of the termination message) is `sustaindiffusion.api.wire`. The Job builder, the
local executor, the worker's CLI and the benchmarks all build or parse the command line here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

WORKER_PROGRAM = "sustaindiffusion-worker"  # the console script in the worker image

# Exit codes of `sustaindiffusion-worker run` (a Job's podFailurePolicy acts on them).
EXIT_OK = 0  # every candidate has a result (failures included, each with its reason)
EXIT_PERMANENT = 2  # the task cannot succeed as written: retrying will not help
EXIT_RETRYABLE = 75  # a transient problem (EX_TEMPFAIL): out of memory at load, a device error

# Where the report goes: Kubernetes reads the container's termination-message file.
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_ENV = "SUSTAINDIFFUSION_TERMINATION_MESSAGE_PATH"
SHARD_ENV = "JOB_COMPLETION_INDEX"  # set by Indexed Jobs; the default shard of `run`

# Options of `sustaindiffusion-worker run`.
OPTION_TASK = "--task"
OPTION_SHARD = "--shard"
OPTION_TERMINATION_LOG = "--termination-log"
OPTION_ARTIFACTS = "--artifacts"
OPTION_METRICS_PORT = "--metrics-port"
OPTION_METRICS_ADDRESS = "--metrics-address"
OPTION_DEVICE = "--device"
OPTION_MODELS_BASE = "--models-base"


def worker_command(
    task: str | Path,
    *,
    program: Sequence[str] = (WORKER_PROGRAM,),
    shard: int | None = None,
    termination_log: str | Path | None = None,
    artifacts: str | Path | None = None,
    metrics_port: int | None = None,
    metrics_address: str | None = None,
    device: str | None = None,
    models_base: str | Path | None = None,
) -> list[str]:
    """The argv of one worker run over one shard of `task`; options left out take the worker's defaults."""
    command = [*program, "run", OPTION_TASK, str(task)]
    options: tuple[tuple[str, object | None], ...] = (
        (OPTION_SHARD, shard),
        (OPTION_TERMINATION_LOG, termination_log),
        (OPTION_ARTIFACTS, artifacts),
        (OPTION_METRICS_PORT, metrics_port),
        (OPTION_METRICS_ADDRESS, metrics_address),
        (OPTION_DEVICE, device),
        (OPTION_MODELS_BASE, models_base),
    )
    for option, value in options:
        if value is not None:
            command += [option, str(value)]
    return command


def shard_failure_reason(shard: int, exit_code: int | None, reason: str | None, message: str = "") -> str:
    """Why a worker run over `shard` failed, in the same words whichever runtime ran it: the fatal
    error its report names, else the last line it left (a log tail), else its exit code."""
    from sustaindiffusion.api.wire import decode_report  # noqa: PLC0415 - wire imports nothing of ours back

    if message.strip():
        try:
            fatal = decode_report(message).fatal
        except ValueError:
            fatal = message.strip().splitlines()[-1]
        if fatal:
            return f"shard {shard}: {fatal}"
    if exit_code is not None:
        return f"shard {shard}: worker exited with code {exit_code} ({reason or 'Error'})"
    return f"shard {shard}: {reason or 'failed'}"
