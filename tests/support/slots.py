"""Test suites that run at the same time on one machine stay apart.

`make test` runs independent suites concurrently, each a pytest process with its own control
plane, and gives each a slot number in $SUSTAINDIFFUSION_TEST_SLOT (0 when unset: a lone run).
A slot owns a block of TCP ports for the servers its tests start, and a block of loopback
addresses for its test kubelet's pods, so no two suites can be handed the same port or pod IP
(the kernel's "port 0" would hand out ports that another process may take before they are bound).
"""

from __future__ import annotations

import os
import socket
import threading

SLOT_ENV = "SUSTAINDIFFUSION_TEST_SLOT"
SLOTS = 16  # make test's suites (one slot each, from 1) and 0 for a lone run, with room to grow
FIRST_PORT = 20000  # below Linux's ephemeral range (32768-60999), which the kernel hands out itself
PORTS_PER_SLOT = 750  # 16 blocks end at 32000, below the ephemeral range

_lock = threading.Lock()
_handed_out: set[int] = set()


def slot() -> int:
    value = os.environ.get(SLOT_ENV, "0")
    if not value.isdigit() or int(value) >= SLOTS:
        raise ValueError(f"{SLOT_ENV}={value!r}: expected a slot number from 0 to {SLOTS - 1}")
    return int(value)


def ports() -> range:
    first = FIRST_PORT + slot() * PORTS_PER_SLOT
    return range(first, first + PORTS_PER_SLOT)


def free_port() -> int:
    """A TCP port of this slot's block, free on 127.0.0.1 now and not handed out before by this
    process (a port handed out but not yet bound is not handed out again)."""
    with _lock:
        for port in ports():
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port left in slot {slot()}'s block {ports()}")


def pod_ip(number: int) -> str:
    """The loopback address of the test kubelet's `number`-th pod: 127.<slot>.x.y."""
    return f"127.{slot()}.{(number // 250) % 250}.{2 + number % 250}"
