"""One writer: a coordination.k8s.io Lease elects the replica that steps searches.

Built on the Kubernetes client's own leader election (`kubernetes.leaderelection`) with its Lease
lock, on our ApiClient (every request has a timeout) and with failures of the API kept inside the
election: a request that fails is retried on the next period instead of ending the election thread.
A replica that is not the leader watches but does not act; the leader that cannot renew its Lease
within the renew deadline stops the process (its container restarts as a follower), so two
replicas never write at once for longer than the lease allows.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = logging.getLogger(__name__)

EXIT_LOST_LEADERSHIP = 70


@dataclass(frozen=True)
class LeaseSettings:
    name: str = "sustaindiffusion-operator"
    namespace: str = "default"
    identity: str = ""
    duration: int = 15
    renew_deadline: int = 10
    retry_period: int = 2

    @property
    def holder(self) -> str:
        return self.identity or default_identity()


def default_identity() -> str:
    """The pod's name (stable across container restarts, so a restarted leader renews at once)."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class _Unreachable:
    """What the election reads as a failed `get` that is not a 404: try again next period."""

    def __init__(self, error: BaseException) -> None:
        self.body, self.reason = "", f"{type(error).__name__}: {error}"


class _RobustLeaseLock(LeaseLock):  # type: ignore[misc]  # the client is not annotated
    """The client's Lease lock, whose failed requests end a period instead of the election, and
    whose leader renews without reading the Lease first: it holds the Lease as its last write
    returned it, and a write on that resourceVersion fails (409) if anybody else wrote since, after
    which the Lease is read again. An idle operator's requests are its renewals, so this halves them.
    """

    lease_reference: Any  # the client's V1Lease, or None

    def __init__(self, api: client.ApiClient, name: str, namespace: str, identity: str) -> None:
        super().__init__(name, namespace, identity)
        self.api_instance = client.CoordinationV1Api(api)
        self._current = False  # lease_reference is the Lease as this replica last wrote it

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        if self._current and self.lease_reference is not None:
            return True, self.get_lock_object(self.lease_reference)
        try:
            result: tuple[bool, Any] = super().get(name, namespace)
        except Exception as error:
            return False, _Unreachable(error)
        return result

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        try:
            self._current = bool(super().create(name, namespace, election_record))
        except Exception as error:
            log.info("lease %s/%s not created: %s", namespace, name, error)
            self._current = False
        return self._current

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        self._current = False
        if self.lease_reference is None:
            return False
        try:
            self.lease_reference.spec = self.get_lease_spec(updated_record, self.lease_reference.spec)
            self.lease_reference = self.api_instance.replace_namespaced_lease(
                name=name, namespace=namespace, body=self.lease_reference
            )
        except Exception as error:
            log.info("lease %s/%s not renewed: %s", namespace, name, error)
            return False
        self._current = True
        return True


def lead(
    api: client.ApiClient,
    settings: LeaseSettings,
    on_started: Callable[[], None],
    on_stopped: Callable[[], None] = lambda: os._exit(EXIT_LOST_LEADERSHIP),
) -> threading.Thread:
    """Run the election in a daemon thread: `on_started` once this replica leads, `on_stopped` when
    it lost the Lease (by default: exit, so the container restarts as a follower)."""
    lock = _RobustLeaseLock(api, settings.name, settings.namespace, settings.holder)

    def stopped() -> None:
        log.error("lost the lease %s/%s: stopping", settings.namespace, settings.name)
        on_stopped()

    config = electionconfig.Config(
        lock,
        lease_duration=settings.duration,
        renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period,
        onstarted_leading=on_started,
        onstopped_leading=stopped,
    )
    thread = threading.Thread(
        target=leaderelection.LeaderElection(config).run, name="leader-election", daemon=True
    )
    thread.start()
    return thread
