"""The harness's readiness wait: a process that exits ends the wait at once, with its log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.processes import ManagedProcess, ProcessExitedError, wait_until, wait_while_running


def test_an_exited_process_ends_the_wait_at_once_with_its_log(tmp_path: Path) -> None:
    process = ManagedProcess(
        "failing", [sys.executable, "-c", "print('bad flag --x'); raise SystemExit(3)"], tmp_path / "log"
    )
    # ProcessExitedError, not the TimeoutError a wait to the end would raise.
    with pytest.raises(ProcessExitedError, match=r"(?s)failing exited with 3.*bad flag --x"):
        wait_while_running(process, lambda: False, timeout=60, interval=0.05, what="never")
    process.stop()


def test_a_running_process_that_never_gets_ready_times_out_with_its_log(tmp_path: Path) -> None:
    script = "import time; print('still starting', flush=True); time.sleep(60)"
    process = ManagedProcess("slow", [sys.executable, "-c", script], tmp_path / "log")
    try:
        wait_until(lambda: "still starting" in process.log_tail(), 20, what="the first line")
        with pytest.raises(TimeoutError, match=r"(?s)waiting for readiness.*slow log tail.*still starting"):
            wait_while_running(process, lambda: False, timeout=0.5, interval=0.05, what="readiness")
    finally:
        process.stop()


def test_errors_of_fatal_types_are_not_retried() -> None:
    calls = []

    def predicate() -> bool:
        calls.append(1)
        raise KeyError("gone")

    with pytest.raises(KeyError):
        wait_until(predicate, 10, interval=0.01, fatal=(KeyError,))
    assert len(calls) == 1
