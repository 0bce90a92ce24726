"""Ctrl-C (SIGINT) and `kill` (SIGTERM) for a local run, handled as a request to stop.

A signal handler that raises `KeyboardInterrupt` can lose it: Python reports an exception raised
while a finaliser (`__del__`, a weakref callback) runs as "ignored" and goes on, so the run would
finish as if nobody had pressed Ctrl-C. Here the handler only sets a flag that cannot be lost; the
run loop reads it between steps and while it waits for workers (every 50 ms), stops the workers
and exits. A second signal while the first is being handled raises `KeyboardInterrupt` at once,
for a user who does not want to wait.

    with stop_requests() as stop:
        while not stop.requested:
            ...
            stop.wait(0.05)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Set once a stop signal arrived; `signal_name` says which."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, less when a stop is requested meanwhile; whether it was."""
        return self._event.wait(timeout)

    def request(self, signal_name: str) -> None:
        self.signal_name = signal_name
        self._event.set()


NEVER = StopRequest()  # for callers without signals (tests, libraries): never requested


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Handle SIGINT and SIGTERM as stop requests within the block (main thread only); the
    previous handlers come back afterwards."""
    stop = StopRequest()

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        stop.request(signal.Signals(signum).name)

    previous = {number: signal.signal(number, handle) for number in HANDLED}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
