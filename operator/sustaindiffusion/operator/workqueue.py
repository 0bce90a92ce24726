"""A work queue of search keys, as controllers keep one: each key processed by one worker at a time.

`add(key, delay)` schedules a key (an earlier schedule wins; a key being processed is marked to run
again when it is done), `get()` hands out the earliest due key, `done(key, token)` ends its
processing. `abandon(key)` lets a key that a stuck worker holds be taken by another worker (the
stuck one's later `done` is ignored). Keys are deduplicated, so a burst of watch events for one
search costs one step.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class WorkQueue(Generic[Key]):
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._due: dict[Key, float] = {}  # key -> when it is due (monotonic seconds)
        self._heap: list[tuple[float, int, Key]] = []
        self._processing: dict[Key, int] = {}  # key -> token of its current processing
        self._again: dict[Key, float] = {}  # processing keys to schedule again when done
        self._counter = itertools.count()
        self._closed = False
        self._waits: dict[int, float] = {}  # token -> how long past its due time its key waited

    def add(self, key: Key, delay: float = 0.0) -> None:
        when = time.monotonic() + max(0.0, delay)
        with self._condition:
            if self._closed:
                return
            if key in self._processing:
                self._again[key] = min(self._again.get(key, math.inf), when)
                return
            if key in self._due and self._due[key] <= when:
                return
            self._due[key] = when
            heapq.heappush(self._heap, (when, next(self._counter), key))
            self._condition.notify()

    def get(self, timeout: float | None = None) -> tuple[Key, int] | None:
        """The earliest due key and a token for `done`, or None after `timeout` or once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while not self._closed:
                now = time.monotonic()
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier schedule, or forgotten
                if self._heap and self._heap[0][0] <= now:
                    when, token, key = heapq.heappop(self._heap)
                    del self._due[key]
                    self._processing[key] = token
                    self._waits[token] = now - when
                    return key, token
                wait = self._heap[0][0] - now if self._heap else None
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wait = min(wait, deadline - now) if wait is not None else deadline - now
                self._condition.wait(wait)
            return None

    def waited(self, token: int) -> float:
        """How long the key handed out with `token` waited past its due time (asked once)."""
        with self._condition:
            return self._waits.pop(token, 0.0)

    def done(self, key: Key, token: int) -> None:
        with self._condition:
            self._waits.pop(token, None)
            if self._processing.get(key) != token:
                return  # abandoned meanwhile: another worker owns the key now
            del self._processing[key]
            again = self._again.pop(key, None)
        if again is not None:
            self.add(key, again - time.monotonic())

    def abandon(self, key: Key) -> None:
        """Give up the current processing of `key` (its worker is stuck) and schedule it again."""
        with self._condition:
            self._processing.pop(key, None)
            self._again.pop(key, None)
        self.add(key)

    def forget(self, key: Key) -> None:
        with self._condition:
            self._due.pop(key, None)
            self._again.pop(key, None)

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def __len__(self) -> int:
        with self._condition:
            return len(self._due)
