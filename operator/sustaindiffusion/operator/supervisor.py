"""A bounded pool of workers that steps searches from a work queue, and a watchdog over them.

kopf only watches (no finalizers: a finalizer would block the deletion of a search while the
operator is down); its events put search keys in the queue. A worker takes a key, steps the search's
driver and schedules it again: at once when the step left work to do at once (the next generation
could not be launched), after `resync` seconds when it did not (watch events come sooner),
after a backoff when it failed, and never when the search is finished, whose driver is dropped so
its engine and archive are freed. A failure that keeps a search
from going on is written into its status at once (permanent errors) or once it has repeated
(transient ones). A step that runs longer than `stuck_after` is abandoned: its key goes to another
worker with a fresh driver, a new worker replaces the stuck one, and `health()` reports it until the
stuck step returns, so a liveness probe can restart an operator that is wedged for good.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sustaindiffusion.kube.api import FailureKind, api_failure, retry_delay
from sustaindiffusion.kube.names import search_label
from sustaindiffusion.operator.driver import DriverStep, SearchDriver, SearchGoneError
from sustaindiffusion.operator.workqueue import WorkQueue

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)

# Steps wait on the API server more than on the CPU: with 100 searches at once on 2 cores, 32
# workers halved the turnaround of 16; 64 did no better (benchmarks/operator_scale.py).
WORKERS = 32
RESYNC_SECONDS = 60.0
STUCK_AFTER_SECONDS = 300.0
REPORT_TRANSIENT_AFTER = 3  # failures in a row before a transient error is shown in the status


@dataclass
class _Busy:
    key: Key
    since: float
    abandoned: bool = False


@dataclass
class _State:
    driver: SearchDriver | None = None
    failures: int = 0  # in a row


def _past(driver: SearchDriver | None, generation: int | None) -> bool:
    current = driver.generation if driver is not None else None
    return current is not None and generation is not None and generation < current


class WorkTimings(Protocol):
    """Where a search's time goes in the operator: waiting for a worker, and being stepped."""

    def waited(self, seconds: float) -> None: ...

    def stepped(self, seconds: float) -> None: ...


class _Untimed:
    def waited(self, seconds: float) -> None:
        pass

    def stepped(self, seconds: float) -> None:
        pass


@dataclass(frozen=True)
class Health:
    ok: bool
    searches: int
    queued: int
    stuck: list[str] = field(default_factory=list)  # "namespace/name: N s" of steps over the limit


class Supervisor:
    def __init__(
        self,
        make_driver: Callable[[str, str], SearchDriver],
        workers: int = WORKERS,
        resync: float = RESYNC_SECONDS,
        stuck_after: float = STUCK_AFTER_SECONDS,
        timings: WorkTimings | None = None,
    ) -> None:
        self._make_driver = make_driver
        self._timings = timings or _Untimed()
        self._workers, self.resync, self.stuck_after = workers, resync, stuck_after
        self.queue: WorkQueue[Key] = WorkQueue()
        self._states: dict[Key, _State] = {}
        self._busy: dict[int, _Busy] = {}  # worker id -> what it steps
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._next_worker = 0
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        for _ in range(self._workers):
            self._spawn_worker()
        watchdog = threading.Thread(target=self._watch, name="supervisor-watchdog", daemon=True)
        watchdog.start()
        self._threads.append(watchdog)

    def stop_all(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        self.queue.close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # ----------------------------------------------------------------- events

    def ensure(self, namespace: str, name: str, resource_version: str | None = None) -> None:
        """Step the search soon (its object changed, or the operator just saw it), unless the
        change at `resource_version` is its driver's own status write: stepping for that would
        read back what the driver just wrote."""
        with self._lock:
            state = self._states.setdefault((namespace, name), _State())
            own = resource_version is not None and (
                state.driver is not None and state.driver.written_version == resource_version
            )
        if not own:
            self.queue.add((namespace, name))

    def wake(self, namespace: str, label: str, generation: int | None = None, delay: float = 0.0) -> None:
        """Step the search whose label value is `label` (from an event of a Job or pod of its
        `generation`) within `delay` seconds, unless its driver has gone past that generation: what
        is left of an earlier generation (its Job and pods being deleted) decides nothing."""
        with self._lock:
            keys = [
                key
                for key, state in self._states.items()
                if key[0] == namespace
                and search_label(key[1]) == label
                and not _past(state.driver, generation)
            ]
        for key in keys:
            self.queue.add(key, delay)

    def stop(self, namespace: str, name: str) -> None:
        """The search was deleted: forget it (its objects are garbage-collected)."""
        with self._lock:
            self._states.pop((namespace, name), None)
        self.queue.forget((namespace, name))

    def health(self) -> Health:
        now = time.monotonic()
        with self._lock:
            stuck = [
                f"{busy.key[0]}/{busy.key[1]}: {now - busy.since:.0f} s"
                for busy in self._busy.values()
                if now - busy.since > self.stuck_after
            ]
            searches = len(self._states)
        return Health(ok=not stuck, searches=searches, queued=len(self.queue), stuck=stuck)

    def drivers(self) -> int:
        """Drivers held in memory (finished searches hold none)."""
        with self._lock:
            return sum(1 for state in self._states.values() if state.driver is not None)

    # ----------------------------------------------------------------- workers

    def _spawn_worker(self) -> None:
        with self._lock:
            worker = self._next_worker
            self._next_worker += 1
        thread = threading.Thread(
            target=self._work, args=(worker,), name=f"search-worker-{worker}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self, worker: int) -> None:
        while not self._stopped.is_set():
            item = self.queue.get(timeout=1.0)
            if item is None:
                continue
            key, token = item
            self._timings.waited(self.queue.waited(token))
            with self._lock:
                self._busy[worker] = _Busy(key, time.monotonic())
            try:
                delay = self._process(key)
            finally:
                with self._lock:
                    busy = self._busy.pop(worker, None)
            if busy is not None and busy.abandoned:
                return  # the watchdog gave this key to another worker and replaced this one
            self.queue.done(key, token)
            if delay is not None:
                self.queue.add(key, delay)

    def _process(self, key: Key) -> float | None:
        """Step the search; the delay before its next step, or None for none."""
        with self._lock:
            state = self._states.get(key)
            if state is None:
                return None  # deleted meanwhile
            if state.driver is None:
                state.driver = self._make_driver(*key)
            driver = state.driver
        try:
            step = self._step(driver)
        except SearchGoneError:
            self.stop(*key)
            return None
        except Exception as error:
            failure = api_failure(error)
            with self._lock:
                state.failures += 1
                failures = state.failures
            if failure.kind is FailureKind.INTERNAL:
                log.exception("%s/%s: step failed", *key)
            else:
                log.warning("%s/%s: %s (%s): %s", *key, failure.kind, failure.status, failure.message)
            if (
                failure.permanent
                or failure.kind is FailureKind.INTERNAL
                or failures >= REPORT_TRANSIENT_AFTER
            ):
                driver.report(failure)
            return retry_delay(failure, failures)
        with self._lock:
            state.failures = 0
            if step.finished:
                state.driver = None  # nothing to do until the search changes; free its engine
        if step.finished:
            return None
        return 0.0 if step.again else self.resync

    def _step(self, driver: SearchDriver) -> DriverStep:
        started = time.monotonic()
        try:
            return driver.step()
        finally:
            self._timings.stepped(time.monotonic() - started)

    def _watch(self) -> None:
        while not self._stopped.wait(min(5.0, self.stuck_after / 4)):
            now = time.monotonic()
            abandoned = []
            with self._lock:
                for busy in self._busy.values():
                    if not busy.abandoned and now - busy.since > self.stuck_after:
                        busy.abandoned = True
                        state = self._states.get(busy.key)
                        if state is not None:
                            state.driver = None  # the next step starts from a fresh driver
                        abandoned.append(busy.key)
            for key in abandoned:
                log.error(
                    "%s/%s: a step has run for over %.0f s; handing the search to another worker",
                    *key,
                    self.stuck_after,
                )
                self.queue.abandon(key)
                self._spawn_worker()
