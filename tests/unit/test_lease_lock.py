"""The Lease lock renews without reading the Lease first, and reads it again once a write fails."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord

from sustaindiffusion.operator.leadership import _RobustLeaseLock


class FakeLeases:
    """One Lease with a resourceVersion, written only on the version it holds."""

    def __init__(self) -> None:
        self.lease: client.V1Lease | None = None
        self.version = 0
        self.calls: list[str] = []

    def read_namespaced_lease(self, name: str, namespace: str) -> client.V1Lease:
        self.calls.append("GET")
        if self.lease is None:
            raise ApiException(status=404, reason="Not Found")
        return self._copy()

    def create_namespaced_lease(self, namespace: str, body: client.V1Lease) -> client.V1Lease:
        self.calls.append("POST")
        self.lease = body
        return self._bump()

    def replace_namespaced_lease(self, name: str, namespace: str, body: client.V1Lease) -> client.V1Lease:
        self.calls.append("PUT")
        if body.metadata.resource_version != str(self.version):
            raise ApiException(status=409, reason="Conflict")
        self.lease = body
        return self._bump()

    def steal(self, holder: str) -> None:
        assert self.lease is not None
        self.lease.spec.holder_identity = holder
        self._bump()

    def _bump(self) -> client.V1Lease:
        assert self.lease is not None
        self.version += 1
        metadata = self.lease.metadata
        if isinstance(metadata, dict):
            metadata = client.V1ObjectMeta(**metadata)
        metadata.resource_version = str(self.version)
        self.lease.metadata = metadata
        return self._copy()

    def _copy(self) -> client.V1Lease:
        assert self.lease is not None
        spec = self.lease.spec
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name="l", resource_version=str(self.version)),
            spec=client.V1LeaseSpec(
                holder_identity=spec.holder_identity,
                lease_duration_seconds=spec.lease_duration_seconds,
                acquire_time=spec.acquire_time,
                renew_time=spec.renew_time,
            ),
        )


def record(holder: str) -> LeaderElectionRecord:
    now = str(dt.datetime.now())
    return LeaderElectionRecord(holder, "15", now, now)


def lock_of(leases: FakeLeases) -> _RobustLeaseLock:
    lock = _RobustLeaseLock(client.ApiClient(), "l", "ns", "me")
    lock.api_instance = cast(client.CoordinationV1Api, leases)
    return lock


def test_the_leader_renews_with_one_write_per_period() -> None:
    leases = FakeLeases()
    lock = lock_of(leases)
    found, _ = lock.get("l", "ns")
    assert not found
    assert lock.create("l", "ns", record("me"))
    for _ in range(3):
        found, held = lock.get("l", "ns")
        assert found
        assert held.holder_identity == "me"
        assert lock.update("l", "ns", record("me"))
    assert leases.calls == ["GET", "POST", "PUT", "PUT", "PUT"]


def test_a_write_that_fails_makes_the_next_period_read_the_lease() -> None:
    leases = FakeLeases()
    lock = lock_of(leases)
    lock.get("l", "ns")
    lock.create("l", "ns", record("me"))
    leases.steal("other")  # another replica took it (the lease had expired)
    assert not lock.update("l", "ns", record("me"))  # written on an old version: refused
    found, held = lock.get("l", "ns")
    assert found
    assert held.holder_identity == "other"
    assert leases.calls[-2:] == ["PUT", "GET"]


def test_an_unreachable_api_server_ends_a_period_not_the_election() -> None:
    class Down(FakeLeases):
        def read_namespaced_lease(self, name: str, namespace: str) -> Any:
            raise ConnectionError("refused")

    lock = lock_of(Down())
    found, answer = lock.get("l", "ns")
    assert not found
    assert "refused" in answer.reason
