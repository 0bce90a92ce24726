"""Child processes that cannot outlive the test session.

Every process is started in its own session (so its whole process group can be signalled) and
with the Linux parent-death signal set to SIGKILL (by util-linux `setpriv`, so no Python code runs
between fork and exec), so even a `kill -9` of pytest takes the control plane and the pods'
processes with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Self


def _with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise FileNotFoundError("setpriv (util-linux) is required to tie test processes to the test run")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


class ManagedProcess:
    """A child process with its own process group and a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            _with_parent_death_signal(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode(errors="replace")

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, grace_seconds: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after the grace period; returns the exit code."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace_seconds)
        # Whatever is left in the group (the leader may have exited first) is killed too.
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self._log.close()
        return self.popen.returncode


def group_is_empty(pgid: int) -> bool:
    """True when no process is left in the process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # Zombies still answer signal 0 until reaped; treat a group of zombies as empty.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            return False
    return True


class ProcessExitedError(RuntimeError):
    """A process that was being waited for exited."""


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
    fatal: tuple[type[BaseException], ...] = (),
) -> None:
    """Poll `predicate()` until it is truthy; raise TimeoutError naming `what` otherwise. Errors of
    the `fatal` types end the wait at once; others are retried (and the last one reported)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
            last_error = None
        except fatal:
            raise
        except Exception as error:
            last_error = error
        time.sleep(interval)
    suffix = f" (last error: {last_error!r})" if last_error else ""
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{suffix}")


def wait_while_running(
    process: ManagedProcess,
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.5,
    what: str = "it to be ready",
) -> None:
    """`wait_until` for a process's readiness: fails at once if the process exits, and either
    failure carries the tail of its log."""

    def check() -> object:
        if not process.alive():
            raise ProcessExitedError(
                f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}"
            )
        return predicate()

    try:
        wait_until(check, timeout, interval=interval, what=what, fatal=(ProcessExitedError,))
    except TimeoutError as error:
        raise TimeoutError(f"{error}\n--- {process.name} log tail ---\n{process.log_tail()}") from None


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether `url` answers 200 (connection errors propagate, for `wait_until` to retry)."""
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return bool(response.status == 200)


class Poller:
    """Calls `probe()` every `interval` s in a thread until closed, for a test that records what
    happened and when (a probe that raises is taken again)."""

    def __init__(self, probe: Callable[[], None], interval: float = 0.25) -> None:
        self.probe, self.interval = probe, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-poller", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)  # a probe under way finishes first

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.probe()
