"""One loop, two executors: the same spec with the same injected shard failures, run by the operator on
the real control plane and by `sustaindiffusion run`'s local executor, ends in the same phase, with
the same reasons and the same archive.

Both runtimes run the stand-in worker (`tests/support/standin_worker.py`: the worker's command line
and report, deterministic synthetic metrics), so every archived value is comparable exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from sustaindiffusion.api.resource import API_VERSION, KIND
from sustaindiffusion.api.validation import load_manifest
from sustaindiffusion.local.runner import LocalRunner
from sustaindiffusion.local.store import RunStore
from sustaindiffusion.search.records import ArchiveRecord
from tests.support.kubelet import TestKubelet
from tests.support.searches import (
    STANDIN_SPEC,
    OperatorProcess,
    archive_records,
    pod_key,
    run_standin_search,
)
from tests.support.standin_worker import PROGRAM

SPEC = STANDIN_SPEC
ALWAYS_OOM = (1, 1)  # (generation, shard) whose every attempt is OOM-killed: recorded failed
FLAKY = (2, 0)  # (generation, shard) whose first attempt fails transiently: retried, then fine


def injected(generation: int, shard: int, attempt: int) -> tuple[int, str] | None:
    if (generation, shard) == ALWAYS_OOM:
        return 137, "OOMKilled"
    if (generation, shard) == FLAKY and attempt == 0:
        return 75, "Error"
    return None


def comparable(records: list[ArchiveRecord]) -> list[tuple[int, str, dict[str, Any]]]:
    """Records without their versions, in a fixed order (shards finish in any order)."""
    return sorted(
        (r.generation, r.candidate_id, r.result.model_dump(mode="json", by_alias=True)) for r in records
    )


def test_the_operator_and_the_local_runner_reach_the_same_end(
    api_client: client.ApiClient,
    operator: OperatorProcess,
    test_kubelet: TestKubelet,
    namespace: str,
    tmp_path: Path,
) -> None:
    attempts: dict[tuple[int, int], int] = {}

    def fault(pod: dict[str, Any]) -> tuple[int, str] | None:
        key = pod_key(pod, namespace)
        if key is None:
            return None
        generation, _, shard = key
        attempt = attempts.get((generation, shard), 0)
        attempts[(generation, shard)] = attempt + 1
        return injected(generation, shard, attempt)

    cluster = run_standin_search(api_client, test_kubelet, operator, namespace, "parity", SPEC, [fault])
    cluster_records = archive_records(api_client, namespace, "parity")

    spec_file = tmp_path / "parity.yaml"
    manifest = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "parity"}, "spec": SPEC}
    spec_file.write_text(yaml.safe_dump(manifest))
    store = RunStore(tmp_path / "out")
    runner = LocalRunner(load_manifest(spec_file), spec_file, store, program=PROGRAM, faults=[injected])
    local = runner.run().status.model_dump(mode="json", by_alias=True, exclude_none=True)

    assert attempts[ALWAYS_OOM] == 2  # the first try and retriesPerCandidate = 1 retry
    assert attempts[FLAKY] == 2
    assert cluster["status"]["phase"] == local["phase"] == "Succeeded"
    reasons = {c["type"]: c["reason"] for c in cluster["status"]["conditions"]}
    assert reasons == {c["type"]: c["reason"] for c in local["conditions"]}
    assert comparable(cluster_records) == comparable(store.records())
    failed = [r for r in cluster_records if not r.result.ok]
    assert {r.generation for r in failed} == {ALWAYS_OOM[0]}
    assert {r.result.reason for r in failed} == {"shard 1: worker exited with code 137 (OOMKilled)"}
    for key in (
        "evaluations",
        "front",
        "frontSize",
        "hypervolume",
        "baselines",
        "energy",
        "generationProgress",
    ):
        assert cluster["status"][key] == local[key], key
