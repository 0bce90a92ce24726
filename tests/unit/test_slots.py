"""Concurrent suites stay apart: each slot hands out its own ports and pod addresses."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.support import slots


def test_slots_hand_out_disjoint_ports_and_pod_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks, addresses = [], []
    for number in range(slots.SLOTS):
        monkeypatch.setenv(slots.SLOT_ENV, str(number))
        blocks.append(set(slots.ports()))
        addresses.append({slots.pod_ip(i) for i in range(600)})
    for i, block in enumerate(blocks):
        assert max(block) < 32768  # not in the kernel's ephemeral range
        for other in blocks[i + 1 :]:
            assert not block & other
    assert all(len(a) == 600 for a in addresses)  # 600 pods of one kubelet: distinct addresses
    assert not set.intersection(*addresses)


def test_a_port_is_handed_out_once_and_skipped_while_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(slots.SLOT_ENV, "7")
    first = slots.free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 1))  # another process's server on the next port
        second = slots.free_port()
    assert first in slots.ports()
    assert second in slots.ports()
    assert second not in (first, first + 1)


def test_an_invalid_slot_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(slots.SLOT_ENV, str(slots.SLOTS))
    with pytest.raises(ValueError, match="SUSTAINDIFFUSION_TEST_SLOT"):
        slots.ports()


def test_every_suite_of_make_test_gets_a_slot_of_its_own() -> None:
    """make numbers its suites from 1 (NAMED_SUITES, then the catch-all e2e): a suite added to the
    Makefile must not run past the last slot (it would fail at its first port)."""
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    named = re.search(r"^NAMED_SUITES := (.+)$", makefile, re.MULTILINE)
    assert named is not None
    suites = [*named.group(1).split(), "e2e"]
    assert len(suites) == len(set(suites))
    assert len(suites) <= slots.SLOTS - 1  # slot 0 is a lone run's
