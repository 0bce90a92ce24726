"""The bounded form of the scale benchmark (`benchmarks/operator_scale.py` runs 100 searches):
20 concurrent searches of population 64 on one operator, with a kill and restart while half are
still running and an idle window after. It asserts what must hold at any scale (every search
succeeds, each evaluates each candidate once, the restarted operator picks every running search
up, finished searches are not polled) and prints the figures; it asserts no timings."""

from __future__ import annotations

import collections
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from kubernetes import client

from tests.e2e.conftest import fresh_namespace
from tests.support.controlplane import ControlPlane
from tests.support.kubelet import TestKubelet
from tests.support.scale import run_scale
from tests.support.searches import archive_records

SEARCHES = 20


def test_twenty_searches_share_one_operator_through_a_restart(
    control_plane: ControlPlane,
    crd_installed: None,
    api_client: client.ApiClient,
    test_kubelet: TestKubelet,
    tmp_path: Path,
) -> None:
    with fresh_namespace(api_client) as namespace:
        figures = run_scale(
            control_plane, api_client, test_kubelet, namespace, tmp_path, SEARCHES, idle_window_s=20
        )
        print("\n".join(figures.lines()))
        assert collections.Counter(figures.phases.values()) == {"Succeeded": SEARCHES}
        for name in figures.phases:
            records = archive_records(api_client, namespace, name)
            ids = [r.result.candidate_id for r in records]
            assert len(ids) == len(set(ids)), f"{name} evaluated a candidate twice"
            assert {r.generation for r in records} == set(range(2 if name.startswith("short") else 3))
        assert figures.running_at_restart > 0  # the restart happened with searches under way
        assert figures.turnarounds_s
        # Finished searches cost no requests: what is left is the operator's own Lease renewals.
        assert set(figures.idle_requests) <= {"PUT leases", "GET leases"}, figures.idle_requests
        # Only worker pods and Jobs are sent to the operator: the API server filters them.
        for kind in ("pods", "jobs"):
            watches = [target for target in figures.watches if urlsplit(target).path.endswith(f"/{kind}")]
            assert watches, figures.watches
            for target in watches:
                assert parse_qs(urlsplit(target).query)["labelSelector"] == [
                    "sustaindiffusion.io/component=worker"
                ]
