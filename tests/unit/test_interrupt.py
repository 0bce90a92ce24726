"""Ctrl-C and SIGTERM as stop requests (local/interrupt.py): a flag that cannot be lost."""

from __future__ import annotations

import gc
import os
import signal

import pytest

from sustaindiffusion.local.interrupt import stop_requests


def test_a_signal_is_a_stop_request_and_the_previous_handlers_come_back() -> None:
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with stop_requests() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5.0)  # handled in the main thread at once; the wait only bounds a failure
        assert stop.signal_name == "SIGTERM"
    assert {number: signal.getsignal(number) for number in before} == before


def test_a_second_signal_stops_at_once() -> None:
    with stop_requests() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


class _Finalised:
    """An object whose finaliser runs Python code, where a raised KeyboardInterrupt would be lost."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs inside this finaliser


def test_a_signal_that_arrives_in_a_finaliser_is_not_lost() -> None:
    with stop_requests() as stop:
        _Finalised()  # dropped at once: its __del__ runs here
        gc.collect()
        assert stop.requested
