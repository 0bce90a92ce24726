"""The work queue and the supervisor's pool: one step per search at a time, rescheduling by outcome,
failures shown in the status, and a stuck step handed to another worker and reported."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from kubernetes.client.exceptions import ApiException

from sustaindiffusion.kube.api import ApiFailure, FailureKind
from sustaindiffusion.kube.names import search_label
from sustaindiffusion.operator.driver import DriverStep, SearchDriver, SearchGoneError
from sustaindiffusion.operator.supervisor import Supervisor
from sustaindiffusion.operator.workqueue import WorkQueue
from tests.support.processes import wait_until


def test_keys_are_deduplicated_and_handed_out_earliest_first() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("b", 0.05)
    queue.add("a")
    queue.add("a")
    queue.add("b")  # an earlier schedule wins
    assert len(queue) == 2
    first, second = queue.get(1.0), queue.get(1.0)
    assert first is not None
    assert second is not None
    assert {first[0], second[0]} == {"a", "b"}
    assert queue.get(0.05) is None


def test_a_key_being_processed_is_not_handed_out_twice_but_runs_again_after() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    item = queue.get(1.0)
    assert item is not None
    queue.add("a")  # an event while it is processed
    assert queue.get(0.05) is None
    queue.done(*item)
    again = queue.get(1.0)
    assert again is not None
    assert again[0] == "a"


def test_an_abandoned_key_goes_to_another_worker_and_the_old_done_is_ignored() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    stuck = queue.get(1.0)
    assert stuck is not None
    queue.abandon("a")
    fresh = queue.get(1.0)
    assert fresh is not None
    assert fresh[0] == "a"
    assert fresh[1] != stuck[1]
    queue.done(*stuck)  # the stuck worker returns late
    queue.add("a")
    assert queue.get(0.05) is None  # still processed by the fresh worker
    queue.done(*fresh)
    assert queue.get(1.0) is not None


class ScriptedDriver:
    """A driver whose steps follow a script of outcomes (DriverStep, an exception, or a wait)."""

    def __init__(self, script: list[Any]) -> None:
        self.script, self.steps, self.reports = script, 0, []  # type: ignore[var-annotated]
        self.release = threading.Event()
        self.written_version: str | None = None
        self.generation: int | None = None

    def step(self) -> DriverStep:
        self.steps += 1
        outcome = self.script.pop(0) if self.script else DriverStep(again=False, finished=False)
        if outcome == "hang":
            self.release.wait(30)
            return DriverStep(again=False, finished=False)
        if isinstance(outcome, BaseException):
            raise outcome
        return cast(DriverStep, outcome)

    def report(self, failure: ApiFailure) -> None:
        self.reports.append(failure)


def supervisor_of(drivers: dict[str, ScriptedDriver], **settings: Any) -> Supervisor:
    made: list[str] = []

    def make(namespace: str, name: str) -> SearchDriver:
        made.append(name)
        return cast(SearchDriver, drivers[name] if made.count(name) == 1 else drivers[f"{name}#2"])

    supervisor = Supervisor(make, **settings)
    supervisor.start()
    return supervisor


def test_a_progressing_search_is_stepped_again_at_once_and_a_finished_one_is_dropped() -> None:
    driver = ScriptedDriver([DriverStep(True, False), DriverStep(True, False), DriverStep(False, True)])
    supervisor = supervisor_of({"s": driver}, workers=2, resync=60)
    try:
        supervisor.ensure("ns", "s")
        wait_until(lambda: driver.steps == 3, 5, what="three steps")
        wait_until(lambda: supervisor.drivers() == 0, 5, what="the finished driver to be dropped")
        time.sleep(0.3)  # time for a wrong step to happen (a slow machine can only hide one, not fake one)
        assert driver.steps == 3  # finished: not polled
    finally:
        supervisor.stop_all()


def test_permanent_failures_are_reported_at_once_and_transient_ones_when_they_repeat() -> None:
    forbidden = ApiException(status=403, reason="Forbidden")
    unavailable = ApiException(status=503, reason="Service Unavailable")
    driver = ScriptedDriver([forbidden, unavailable, unavailable, unavailable, DriverStep(False, True)])
    supervisor = supervisor_of({"s": driver}, workers=1)
    try:
        deadline = time.monotonic() + 10
        while driver.script and time.monotonic() < deadline:
            supervisor.ensure("ns", "s")  # an event wakes the search before its backoff ends
            time.sleep(0.05)  # events every 50 ms, as a busy watch would deliver them
        wait_until(lambda: supervisor.drivers() == 0, 5, what="the search to finish")
        # forbidden: at once; 503: from the third failure in a row on
        assert [r.kind for r in driver.reports] == [
            FailureKind.FORBIDDEN,
            FailureKind.TRANSIENT,
            FailureKind.TRANSIENT,
        ]
    finally:
        supervisor.stop_all()


def test_a_deleted_search_is_forgotten() -> None:
    driver = ScriptedDriver([SearchGoneError("s")])
    supervisor = supervisor_of({"s": driver})
    try:
        supervisor.ensure("ns", "s")
        wait_until(lambda: supervisor.health().searches == 0, 5, what="the search to be forgotten")
    finally:
        supervisor.stop_all()


def test_a_stuck_step_is_abandoned_reported_and_its_search_goes_on_elsewhere() -> None:
    stuck = ScriptedDriver(["hang"])
    fresh = ScriptedDriver([DriverStep(False, True)])
    supervisor = supervisor_of({"s": stuck, "s#2": fresh}, workers=1, stuck_after=0.4)
    try:
        supervisor.ensure("ns", "s")
        wait_until(lambda: fresh.steps == 1, 10, what="the search stepped by a fresh driver")
        health = supervisor.health()
        assert not health.ok
        assert health.stuck
        assert health.stuck[0].startswith("ns/s: ")
        stuck.release.set()  # the stuck step returns at last
        wait_until(lambda: supervisor.health().ok, 5, what="health to recover")
    finally:
        stuck.release.set()
        supervisor.stop_all()


def test_the_event_of_a_drivers_own_status_write_does_not_step_the_search_again() -> None:
    driver = ScriptedDriver([DriverStep(False, False)] * 3)
    supervisor = supervisor_of({"s": driver}, workers=1, resync=60)
    try:
        supervisor.ensure("ns", "s")
        wait_until(lambda: driver.steps == 1, 5, what="the first step")
        driver.written_version = "7"  # the status it wrote came back as resourceVersion 7
        supervisor.ensure("ns", "s", "7")
        time.sleep(0.3)  # time for a wrong step to happen (a slow machine can only hide one, not fake one)
        assert driver.steps == 1
        supervisor.ensure("ns", "s", "8")  # someone else's change
        wait_until(lambda: driver.steps == 2, 5, what="a step for the other change")
    finally:
        supervisor.stop_all()


def test_events_of_a_generation_the_search_has_left_do_not_step_it() -> None:
    driver = ScriptedDriver([DriverStep(False, False)] * 4)
    supervisor = supervisor_of({"s": driver}, workers=1, resync=60)
    try:
        supervisor.ensure("ns", "s")
        wait_until(lambda: driver.steps == 1, 5, what="the first step")
        driver.generation = 3
        supervisor.wake("ns", search_label("s"), 2)  # generation 2's pods being deleted
        supervisor.wake("other", search_label("s"), 3)  # a search of that name elsewhere
        time.sleep(0.3)  # time for a wrong step to happen (a slow machine can only hide one, not fake one)
        assert driver.steps == 1
        supervisor.wake("ns", search_label("s"), 3)
        wait_until(lambda: driver.steps == 2, 5, what="a step for its current generation")
        woken = time.monotonic()
        supervisor.wake("ns", search_label("s"), 3, delay=3.0)  # what only the status shows: soon
        time.sleep(0.2)  # time for a wrong, early step to happen
        if time.monotonic() - woken < 3.0:  # a machine that slept past the delay cannot tell
            assert driver.steps == 2
        wait_until(lambda: driver.steps == 3, 10, what="the delayed step")
    finally:
        supervisor.stop_all()
