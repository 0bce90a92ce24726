"""What must not wedge a search, on the real control plane: a search re-created under the same name,
a Job the API server refuses, an archive append refused half-way, two operator replicas at once,
and reports that are malformed, partial, forged or lost. Workers are the stand-in worker."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.kube import names
from sustaindiffusion.kube.archive import ConfigMapArchive, read_chunks
from sustaindiffusion.kube.builders import TASK_KEY, SearchRef
from sustaindiffusion.search.records import ArchiveRecord, parse_lines
from tests.support.controlplane import ControlPlane
from tests.support.kubelet import TestKubelet
from tests.support.processes import wait_until
from tests.support.searches import (
    OperatorProcess,
    archive_records,
    create_search,
    evaluated_candidates,
    get_search,
    pod_key,
    run_standin_search,
    standin_spec,
    standin_workers,
    wait_event,
    wait_phase,
)

TIMEOUT = 120


def conditions(search: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (search.get("status") or {}).get("conditions") or []}


def generation_of(api: client.ApiClient, namespace: str, name: str) -> int:
    return int((get_search(api, namespace, name).get("status") or {}).get("generation", 0))


def lease_holder(api: client.ApiClient, namespace: str) -> str:
    lease = client.CoordinationV1Api(api).read_namespaced_lease("sustaindiffusion-operator", namespace)
    return str(lease.spec.holder_identity)


def test_a_search_recreated_under_the_same_name_starts_clean(
    api_client: client.ApiClient, operator: OperatorProcess, test_kubelet: TestKubelet, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api_client)
    with standin_workers(test_kubelet, namespace):
        create_search(api_client, namespace, "again", standin_spec(algorithm={"generations": 3}))
        wait_until(
            lambda: (
                (get_search(api_client, namespace, "again").get("status") or {}).get("generation", 0) >= 1
            ),
            TIMEOUT,
            what="the first search's generation 1",
        )
        old_uid = get_search(api_client, namespace, "again")["metadata"]["uid"]
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "again")
        wait_until(
            lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"],
            30,
            what="the deletion",
        )
        # Within a second, while the old Jobs and ConfigMaps still wait for garbage collection.
        create_search(api_client, namespace, "again", standin_spec(algorithm={"seed": 77}))
        search = wait_phase(api_client, namespace, "again", operator)
    new_uid = search["metadata"]["uid"]
    assert new_uid != old_uid
    # Only the new search's records: its own archive, counted as its status counts them.
    core = client.CoreV1Api(api_client)
    records = [
        record
        for chunk in read_chunks(core, SearchRef("again", namespace, new_uid))
        for record in parse_lines(chunk.text)
    ]
    assert records
    assert read_chunks(core, SearchRef("again", namespace, old_uid)) == []
    ids = [r.candidate_id for r in records]
    assert len(ids) == len(set(ids))
    counters = search["status"]["evaluations"]
    assert counters["succeeded"] + counters["failed"] == len(records)
    assert search["status"]["generationProgress"] == "2/2"


def test_a_job_the_api_server_refuses_is_shown_and_fixing_the_spec_resumes(
    api_client: client.ApiClient, operator: OperatorProcess, test_kubelet: TestKubelet, namespace: str
) -> None:
    # The CRD keeps affinity open (a pod spec's affinity); the API server checks it on the Job.
    invalid: dict[str, Any] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}
    }
    with standin_workers(test_kubelet, namespace):
        create_search(api_client, namespace, "refused", standin_spec(execution={"affinity": invalid}))
        started = time.monotonic()

        def rejected() -> bool:
            failed = conditions(get_search(api_client, namespace, "refused")).get("Failed") or {}
            return failed.get("status") == "True" and failed.get("reason") == "RequestRejected"

        wait_until(rejected, 60, what="the RequestRejected condition")
        shown_after = time.monotonic() - started
        search = get_search(api_client, namespace, "refused")
        assert search["status"]["phase"] == "Failed"
        assert "nodeSelectorTerms" in conditions(search)["Failed"]["message"]
        assert shown_after < 30
        wait_event(
            api_client,
            namespace,
            lambda e: e.reason == "RequestRejected" and "nodeSelectorTerms" in e.message,
            "the RequestRejected event",
        )
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "refused", {"spec": {"execution": {"affinity": None}}}
        )
        wait_until(
            lambda: (
                (get_search(api_client, namespace, "refused").get("status") or {}).get("phase") == "Running"
            ),
            60,
            what="the fixed search to run again",
        )
        fixed = wait_phase(api_client, namespace, "refused", operator)
    assert fixed["status"]["generationProgress"] == "2/2"


def test_an_archive_append_refused_half_way_is_retried_without_duplicates(
    api_client: client.ApiClient, crd_installed: None, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    owner = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SustainSearch",
            "metadata": {"name": "archive"},
            "spec": standin_spec(),
        },
    )
    search = SearchRef("archive", namespace, owner["metadata"]["uid"])
    records = [
        ArchiveRecord(
            generation=i // 8, result=EvaluationResult.failed(f"{i:016x}", f"reason {i} " + "x" * 120)
        )
        for i in range(40)
    ]
    existing = len(core.list_namespaced_config_map(namespace).items)
    quota = {"metadata": {"name": "configmaps"}, "spec": {"hard": {"count/configmaps": str(existing + 1)}}}
    core.create_namespaced_resource_quota(namespace, quota)
    wait_until(
        lambda: core.read_namespaced_resource_quota("configmaps", namespace).status.hard or {},
        30,
        what="the quota to be counted",
    )
    archive = ConfigMapArchive(core, search, chunk_bytes=2048)
    with pytest.raises(ApiException) as refused:
        archive.append(records)
    assert refused.value.status == 403
    assert "exceeded quota" in str(refused.value.body)
    written = [r for chunk in read_chunks(core, search) for r in chunk.text.splitlines()]
    assert 0 < len(written) < len(records)  # half-way: the first chunk was written
    core.delete_namespaced_resource_quota("configmaps", namespace)
    # Everything is appended again, as the loop does after a failed step; nothing twice.
    wait_until(lambda: _append(archive, records), 30, interval=1.0, what="the append to go through")
    again = ConfigMapArchive(core, search, chunk_bytes=2048)
    assert [r.candidate_id for r in again.read()] == [r.candidate_id for r in records]
    again.append(records[:10])  # a retried step after a lost response
    chunks = read_chunks(core, search)
    assert [r.candidate_id for r in ConfigMapArchive(core, search).read()] == [
        r.candidate_id for r in records
    ]
    full = [core.read_namespaced_config_map(c.name, namespace) for c in chunks[:-1]]
    assert full
    assert all(cm.immutable for cm in full)
    assert not core.read_namespaced_config_map(chunks[-1].name, namespace).immutable


def _append(archive: ConfigMapArchive, records: list[ArchiveRecord]) -> bool:
    try:
        archive.append(records)
    except ApiException as error:
        if error.status == 403:  # the quota's deletion is not observed at once
            return False
        raise
    return True


def test_two_replicas_elect_one_writer_and_the_other_takes_over(
    control_plane: ControlPlane,
    api_client: client.ApiClient,
    crd_installed: None,
    test_kubelet: TestKubelet,
    namespace: str,
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="sd-replicas-"))
    lease = ("--lease-duration", "6")
    replicas = [
        OperatorProcess(control_plane, namespace, workdir, identity=f"replica-{i}", extra_args=lease)
        for i in (1, 2)
    ]
    try:
        for replica in replicas:
            replica.start()
        with standin_workers(test_kubelet, namespace):
            create_search(api_client, namespace, "shared", standin_spec(algorithm={"generations": 4}))
            wait_until(
                lambda: (
                    (get_search(api_client, namespace, "shared").get("status") or {}).get("generation", 0)
                    >= 2
                ),
                TIMEOUT,
                what="generation 2",
            )
            leader = lease_holder(api_client, namespace)
            assert leader in ("replica-1", "replica-2")
            leading = next(r for r in replicas if r.identity == leader)
            standby = next(r for r in replicas if r is not leading)
            health = json.loads(
                urllib.request.urlopen(f"http://127.0.0.1:{standby.health_port}/healthz").read()
            )
            assert health == {"leader": False, "ok": True}
            leading.kill()
            search = wait_phase(api_client, namespace, "shared", standby)
        assert lease_holder(api_client, namespace) == standby.identity
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{standby.health_port}/healthz").read())
        assert health["leader"] is True
        assert health["ok"] is True
        records = archive_records(api_client, namespace, "shared")
        ids = [r.candidate_id for r in records]
        assert len(ids) == len(set(ids))
        assert search["status"]["generationProgress"] == "4/4"
        evaluated = evaluated_candidates(test_kubelet, namespace)
        assert len(evaluated) == len(set(evaluated)) == len(ids), "a candidate was evaluated twice"
    finally:
        for replica in replicas:
            replica.kill()
        shutil.rmtree(workdir, ignore_errors=True)


FORGED = "feedfacefeedface"
UNUSABLE = [
    "",
    "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA error",
    '{"v":1}',
    '{"v":1,"g":1,"s":0,"r":[5]}',
    '{"v":1,"g":1e400,"s":0}',
    "[" * 3000,
    '{"v":1,"g":1,"s":0,"r":[["{id}",1,Infinity,0,0,0,0,0,0,0,4]]}',
    '{"v":1,"g":1,"s":0,"r":[["{id}",1,NaN,0,0,0,0,0,0,0,4]]}',
    '{"v":1,"g":1,"s":0,"r":[["{id}",1,0.5,0.5,0.5,-3,0,0,0,0,4]]}',
    '{"v":1,"g":1,"s":0,"r":[["' + FORGED + '",1,0.5,0.5,0.5,1,1,1,1,0,4]]}',
    '{"v":1,"g":1,"s":0,"r":[],"x":"fatal: the model could not be loaded"}',
    '{"v":1,"g":0,"s":0,"r":[]}',
]


def test_malformed_forged_and_lost_reports_are_retried_never_wedging(
    api_client: client.ApiClient, operator: OperatorProcess, test_kubelet: TestKubelet, namespace: str
) -> None:
    """Each shard of generation 1 first 'succeeds' (exit 0) with an unusable report of its own kind,
    then runs for real in a follow-up round."""
    seen: dict[tuple[int, int, int], int] = {}
    core = client.CoreV1Api(api_client)

    def bad_first_report(pod: dict[str, Any]) -> tuple[int, str, str] | None:
        key = pod_key(pod, namespace)
        if key is None or key[:2] != (1, 0):
            return None
        seen[key] = seen.get(key, 0) + 1
        task_map = core.read_namespaced_config_map(names.task_config_map_name("hostile", 1), namespace)
        task = EvaluationTask.model_validate_json((task_map.data or {})[TASK_KEY])
        member = task.shard(key[2])[0].candidate_id  # a real candidate of the shard, for valid ids
        return 0, "Completed", UNUSABLE[key[2] % len(UNUSABLE)].replace("{id}", member)

    spec = standin_spec(algorithm={"populationSize": 12, "generations": 2}, execution={"candidatesPerPod": 1})
    search = run_standin_search(
        api_client, test_kubelet, operator, namespace, "hostile", spec, [bad_first_report]
    )
    records = archive_records(api_client, namespace, "hostile")
    ids = [r.candidate_id for r in records]
    assert len(ids) == len(set(ids))
    assert FORGED not in ids
    assert all(r.result.ok for r in records), [r.result.reason for r in records if not r.result.ok]
    assert len(seen) >= 8  # shards of round 0 of generation 1, each given an unusable report
    events = client.CoreV1Api(api_client).list_namespaced_event(namespace).items
    assert any(e.reason == "CandidatesRetried" for e in events)
    assert search["status"]["generationProgress"] == "2/2"
    jobs = client.BatchV1Api(api_client).list_namespaced_job(namespace).items
    assert not jobs  # the follow-up rounds' Jobs are released with their generation
    task_maps = client.CoreV1Api(api_client).list_namespaced_config_map(
        namespace, label_selector=f"{names.LABEL_COMPONENT}={names.COMPONENT_TASK}"
    )
    assert not task_maps.items
