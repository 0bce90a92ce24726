"""The generation loop's executor on one machine: worker processes, as pods would run them.

A round's task is written once to DIR/tasks/g0003.json (a follow-up round: g0003-r1.json; its shard
map is the one that counts on resume). Each shard runs as `sustaindiffusion-worker run --shard N` in
its own process group, at most `execution.parallelism` at a time, its report written where a pod's
termination message would be (DIR/reports/g0003-s0001-a0.json, attempt 0) and its exit code beside
it (`.exit`). A failed attempt is retried up to the task's `retries` times, except after the worker's
"cannot succeed as written" exit code, as the Job's pod-failure policy does; a worker that exits 0
settles its shard, and its report is read as a pod's termination message is (`kube.classify` does
the same for pods). Attempts that finished before an interruption are read on resume, so their
candidates are not evaluated again.

`faults` lets tests make an attempt fail without running it, as the test kubelet does for pods.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from sustaindiffusion.api.contract import EXIT_OK, EXIT_PERMANENT, shard_failure_reason, worker_command
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.local.interrupt import NEVER, StopRequest
from sustaindiffusion.local.store import RunStore
from sustaindiffusion.search.loop import Collected, ShardOutcome, report_outcome

WORKER_MODULE = (sys.executable, "-m", "sustaindiffusion.worker")  # the worker of this environment
STOP_GRACE_S = 10.0  # a stopped worker's time to exit on SIGTERM before it is killed
LOG_TAIL_BYTES = 2048  # what a pod's FallbackToLogsOnError keeps of a failed container's log

# (generation, shard, attempt) -> (exit code, reason) of an attempt made to fail without running
Fault = Callable[[int, int, int], tuple[int, str] | None]


@dataclass
class _Attempt:
    shard: int
    number: int
    process: subprocess.Popen[bytes] | None = None


class LocalExecutor:
    def __init__(
        self,
        store: RunStore,
        spec: SustainSearchSpec,
        device: str = "auto",
        models_base: Path | None = None,
        program: Sequence[str] = WORKER_MODULE,
        faults: Sequence[Fault] = (),
    ) -> None:
        self.store, self.spec, self.device = store, spec, device
        self.models_base, self.program, self.faults = models_base, tuple(program), list(faults)
        self._running: dict[tuple[int, int, int], _Attempt] = {}  # (generation, round, shard) -> attempt

    # ----------------------------------------------------------------- Executor

    def launched_tasks(self, generation: int) -> list[EvaluationTask]:
        tasks = []
        for path in sorted(self.store.tasks.glob(f"g{generation:04d}*.json")):
            try:
                task = EvaluationTask.model_validate_json(path.read_text())
            except (OSError, ValidationError):
                continue
            if task.generation == generation and path == self._task_path(task):
                tasks.append(task)
        return sorted(tasks, key=lambda t: t.round)

    def launch(self, task: EvaluationTask) -> None:
        path = self._task_path(task)
        if path.exists():
            return
        temporary = path.with_suffix(".tmp")
        temporary.write_text(task.model_dump_json(by_alias=True))
        temporary.replace(path)

    def collect(self, task: EvaluationTask) -> Collected:
        """Reap finished workers, start the next ones (up to the parallelism), and report every shard
        whose last attempt is over."""
        collected = Collected()
        for shard in range(task.shard_count):
            ended = self._settle(task, shard)
            if ended is None:
                continue  # running, or waiting for a free slot
            attempts, exit_code, text, reason = ended
            if exit_code == EXIT_OK:
                collected.shards[shard] = report_outcome(task, shard, text, attempts)
            else:
                failure = shard_failure_reason(shard, exit_code, reason, text)
                collected.shards[shard] = ShardOutcome(failure=failure, attempts=attempts, final=True)
        return collected

    def release(self, generation: int) -> None:
        stopping = [key for key in self._running if key[0] == generation]
        _stop_all([self._running.pop(key) for key in stopping])

    # ----------------------------------------------------------------- for the runner

    def wait(self, timeout: float = 1.0, stop: StopRequest = NEVER) -> None:
        """Block until a worker ends, a stop is requested or `timeout` passes (a step that found
        nothing new calls this)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(a.process is not None and a.process.poll() is not None for a in self._running.values()):
                return
            if stop.wait(0.05):
                return

    def interrupt(self) -> None:
        """Stop every worker. Their attempts leave no exit record, so a resumed run starts them
        again as the same attempts (an interruption spends none of a shard's retries)."""
        _stop_all(list(self._running.values()))
        self._running.clear()

    # ----------------------------------------------------------------- internals

    def _settle(self, task: EvaluationTask, shard: int) -> tuple[int, int, str, str] | None:
        """(attempts, exit code, report text, reason) of the shard's final attempt, or None while one
        runs or waits for a free slot."""
        key = (task.generation, task.round, shard)
        running = self._running.get(key)
        if running is not None:
            if running.process is not None and running.process.poll() is None:
                return None
            self._finish(task, running)
            del self._running[key]
        number, outcome = self._last_attempt(task, shard)
        if outcome is not None:
            if outcome[0] in (EXIT_OK, EXIT_PERMANENT) or number >= task.retries:
                return (number + 1, *outcome)
            number += 1
        if sum(1 for g, _, _ in self._running if g == task.generation) >= self.spec.execution.parallelism:
            return None
        self._start(task, shard, number)
        # A fault ends an attempt at once; a real worker runs until a later collect.
        return None if key in self._running else self._settle(task, shard)

    def _last_attempt(self, task: EvaluationTask, shard: int) -> tuple[int, tuple[int, str, str] | None]:
        """The number and recorded end of the shard's last finished attempt ((0, None): none)."""
        number, outcome = 0, None
        while (ended := self._finished_attempt(task, shard, number)) is not None:
            outcome = ended
            number += 1
        return max(0, number - 1), outcome

    def _start(self, task: EvaluationTask, shard: int, number: int) -> None:
        attempt = _Attempt(shard, number)
        report = self._report_path(task, shard, number)
        report.unlink(missing_ok=True)
        for fault in self.faults:
            injected = fault(task.generation, shard, number)
            if injected is not None:
                exit_code, reason = injected
                self._exit_path(task, shard, number).write_text(f"{exit_code} {reason}\n")
                return
        command = worker_command(
            self._task_path(task),
            program=self.program,
            shard=shard,
            termination_log=report,
            artifacts=self.store.artifacts,
            models_base=self.models_base,
            device=self.device,
        )
        with report.with_suffix(".log").open("wb") as log:
            attempt.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        self._running[(task.generation, task.round, shard)] = attempt

    def _finish(self, task: EvaluationTask, attempt: _Attempt) -> None:
        assert attempt.process is not None
        code = attempt.process.wait()
        exit_code = code if code >= 0 else 128 - code  # killed by a signal: as a kubelet reports it
        reason = "Completed" if exit_code == EXIT_OK else "Error"
        self._exit_path(task, attempt.shard, attempt.number).write_text(f"{exit_code} {reason}\n")

    def _finished_attempt(self, task: EvaluationTask, shard: int, number: int) -> tuple[int, str, str] | None:
        """The recorded end of an attempt: exit code, report text (or, for a failure with an empty
        report, the log's tail, as FallbackToLogsOnError gives), reason; None if it never ended."""
        try:
            code, _, reason = self._exit_path(task, shard, number).read_text().strip().partition(" ")
            exit_code = int(code)
        except (OSError, ValueError):
            return None
        report = self._report_path(task, shard, number)
        text = report.read_text(errors="replace") if report.exists() else ""
        if not text.strip() and exit_code != EXIT_OK:
            with contextlib.suppress(OSError):
                text = report.with_suffix(".log").read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace")
        return exit_code, text, reason

    def _task_path(self, task: EvaluationTask) -> Path:
        return self.store.tasks / f"{_round_name(task)}.json"

    def _report_path(self, task: EvaluationTask, shard: int, number: int) -> Path:
        return self.store.reports / f"{_round_name(task)}-s{shard:04d}-a{number}.json"

    def _exit_path(self, task: EvaluationTask, shard: int, number: int) -> Path:
        return self._report_path(task, shard, number).with_suffix(".exit")


def _stop_all(attempts: Sequence[_Attempt]) -> None:
    """SIGTERM every attempt's process group at once, then SIGKILL what is left after
    STOP_GRACE_S: stopping P workers takes one grace period, not P."""
    processes = [a.process for a in attempts if a.process is not None and a.process.poll() is None]
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _round_name(task: EvaluationTask) -> str:
    return f"g{task.generation:04d}" + (f"-r{task.round}" if task.round else "")
