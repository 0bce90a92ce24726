"""One driver thread per SustainSearch, woken by cluster events, polling as a fallback.

kopf daemons would do this too, but kopf guards daemons with a finalizer, and a finalizer blocks
the deletion of a search while the operator is down. Here kopf only watches (no finalizers);
ownership references let the garbage collector remove a deleted search's Jobs and ConfigMaps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kubernetes.client.exceptions import ApiException

from sustaindiffusion.kube.names import search_label
from sustaindiffusion.operator.driver import SearchDriver, SearchGoneError

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0
ERROR_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


class DriverThread:
    def __init__(self, driver: SearchDriver, on_gone: Callable[[], None]) -> None:
        self.driver = driver
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self._on_gone = on_gone
        self.thread = threading.Thread(
            target=self._run, name=f"search-{driver.namespace}-{driver.name}", daemon=True
        )

    def _run(self) -> None:
        errors = 0
        while not self.stopped.is_set():
            try:
                progressed = self.driver.step()
                errors = 0
            except SearchGoneError:
                self._on_gone()
                return
            except ApiException as error:
                log.warning(
                    "%s/%s: API error %s %s; will retry",
                    self.driver.namespace,
                    self.driver.name,
                    error.status,
                    error.reason,
                )
                progressed, errors = False, errors + 1
            except Exception:
                log.exception(
                    "%s/%s: reconciliation failed; will retry", self.driver.namespace, self.driver.name
                )
                progressed, errors = False, errors + 1
            if progressed:
                continue
            delay = (
                ERROR_BACKOFF_SECONDS[min(errors, len(ERROR_BACKOFF_SECONDS)) - 1] if errors else POLL_SECONDS
            )
            self.wake.wait(delay)
            self.wake.clear()


class Supervisor:
    def __init__(self, make_driver: Callable[[str, str], SearchDriver]) -> None:
        self._make_driver = make_driver
        self._threads: dict[tuple[str, str], DriverThread] = {}
        self._lock = threading.Lock()

    def ensure(self, namespace: str, name: str) -> None:
        """Start driving the search unless it is driven already; wake its driver either way."""
        key = (namespace, name)
        with self._lock:
            current = self._threads.get(key)
            if current is None or not current.thread.is_alive():
                current = DriverThread(self._make_driver(namespace, name), lambda: self._forget(key))
                self._threads[key] = current
                current.thread.start()
        current.wake.set()

    def wake(self, namespace: str, label: str) -> None:
        """Wake the driver of the search whose label value is `label` (from a Job or pod event)."""
        with self._lock:
            for (ns, name), driver in self._threads.items():
                if ns == namespace and search_label(name) == label:
                    driver.wake.set()

    def stop(self, namespace: str, name: str) -> None:
        with self._lock:
            driver = self._threads.pop((namespace, name), None)
        if driver is not None:
            driver.stopped.set()
            driver.wake.set()

    def stop_all(self, timeout: float = 10.0) -> None:
        with self._lock:
            drivers = list(self._threads.values())
            self._threads.clear()
        for driver in drivers:
            driver.stopped.set()
            driver.wake.set()
        deadline = time.monotonic() + timeout
        for driver in drivers:
            driver.thread.join(max(0.0, deadline - time.monotonic()))

    def _forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._threads.pop(key, None)
