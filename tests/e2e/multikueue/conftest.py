"""MultiKueue's tests get a manager and two worker clusters of their own, each a control plane with
its own Kueue (tests/support/multikueue.py): the package starts them once. A test that stops a
worker's API server gets it back afterwards (`multikueue`), so every test starts with both workers
Active."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import RESTRICTED
from tests.support.multikueue import MultiKueueEnvironment, WaitForPodsReady, started_multikueue

# `make test` runs the bounded form (one search, one generation, one cluster lost); `make multikueue`
# the full one (SUSTAINDIFFUSION_MULTIKUEUE=full): a longer search, and Kueue's own behaviour with a
# plain Job (a lost worker, pods never ready) that the bounded search already relies on.
FULL = os.environ.get("SUSTAINDIFFUSION_MULTIKUEUE") == "full"
full_only = pytest.mark.skipif(
    not FULL, reason="the full MultiKueue suite only (make multikueue); make test runs the bounded form"
)
WORKER_LOST_TIMEOUT_S = 20  # Kueue's default is 15 minutes
# The workers evict a Workload whose pods are not all ready this long after admission (the test
# kubelet's pods are ready as soon as they run, within a second or two here).
PODS_READY_TIMEOUT_S = 20


@pytest.fixture(scope="package")
def multikueue_environment() -> Iterator[MultiKueueEnvironment]:
    with started_multikueue(
        "sd-multikueue-",
        worker_lost_timeout_s=WORKER_LOST_TIMEOUT_S,
        wait_for_pods_ready=WaitForPodsReady(timeout_s=PODS_READY_TIMEOUT_S),
    ) as environment:
        yield environment


@pytest.fixture
def multikueue(multikueue_environment: MultiKueueEnvironment) -> Iterator[MultiKueueEnvironment]:
    """The package's environment; a worker the test stopped is restarted (and Active) afterwards."""
    yield multikueue_environment
    for name in sorted(multikueue_environment.stopped_workers):
        started = time.monotonic()
        multikueue_environment.restart_worker_api_server(name)
        print(
            f"{name}: API server back and its MultiKueueCluster Active in {time.monotonic() - started:.1f} s"
        )


@pytest.fixture
def namespace(multikueue: MultiKueueEnvironment) -> Iterator[str]:
    """A namespace (Pod Security `restricted`) with the LocalQueue `team` in every cluster."""
    name = f"mk-{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    multikueue.prepare_namespace(name, labels=RESTRICTED)
    print(
        f"\nnamespace {name} and its LocalQueues ready in every cluster in {time.monotonic() - started:.1f} s"
    )
    try:
        yield name
    finally:
        multikueue.delete_namespace(name)
