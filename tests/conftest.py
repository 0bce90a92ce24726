"""Shared pytest set-up: a SIGTERM (CI time-out, `kill`) becomes a KeyboardInterrupt, so pytest
runs every fixture's teardown and no control-plane or pod process is left behind."""

from __future__ import annotations

import signal
from types import FrameType

import pytest


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"received signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
