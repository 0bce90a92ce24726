"""The chaos suite: a search on the real control plane survives what a shared GPU cluster does to it.

- the operator SIGKILLed at random moments, in the middle of archive appends and status writes too;
- a fifth of the worker pods fail: exit codes, OOM kills, deleted while running, evicted;
- pods that finish with malformed, partial, forged or fatal reports;
- a fault-injecting proxy between the operator and the API server: the Nth request answers 409,
  429, 500 or 403, times out, is reset, or is applied but its response lost; connections
  blackholed, then healed;
- the spec's `execution` and `algorithm.generations` patched in the middle of a generation.

Workers are the stand-in worker (deterministic synthetic metrics), so every archive can be compared
exactly with an undisturbed run of the same spec by the local runner (the parity test shows the two
runtimes archive the same). Each test runs a bounded version in `make test`; `make chaos` runs the
full one (SUSTAINDIFFUSION_CHAOS=full: 20 kills, more pods and messages). Figures for the record
are printed (pytest -s shows them).
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sustaindiffusion.api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.api.validation import load_manifest
from sustaindiffusion.api.wire import ReportError, ShardReport, decode_report, encode_report
from sustaindiffusion.kube import names
from sustaindiffusion.kube.builders import TASK_KEY
from sustaindiffusion.local.runner import LocalRunner
from sustaindiffusion.local.store import RunStore
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.records import ArchiveRecord
from tests.support.controlplane import ControlPlane
from tests.support.fake_evaluator import fake_task_result
from tests.support.faultproxy import Fault, FaultProxy, proxied_kubeconfig, proxy_for
from tests.support.kubelet import TestKubelet
from tests.support.processes import wait_until
from tests.support.searches import (
    OperatorProcess,
    archive_records,
    create_search,
    get_search,
    pod_key,
    run_standin_search,
    standin_spec,
    standin_workers,
    wait_phase,
)
from tests.support.standin_worker import PROGRAM

pytestmark = pytest.mark.chaos

FULL = os.environ.get("SUSTAINDIFFUSION_CHAOS") == "full"
SEED = int(os.environ.get("SUSTAINDIFFUSION_CHAOS_SEED", "20261201"))


def scaled(bounded: int, full: int) -> int:
    return full if FULL else bounded


Comparable = list[tuple[int, str, dict[str, Any]]]


def comparable(records: list[ArchiveRecord]) -> Comparable:
    return sorted((r.generation, r.candidate_id, r.result.model_dump(mode="json")) for r in records)


def reference(spec: dict[str, Any], directory: Path) -> tuple[Comparable, dict[str, Any]]:
    """The archive and status of an undisturbed run of `spec` by the local runner."""
    directory.mkdir(parents=True, exist_ok=True)
    spec_file = directory / "search.yaml"
    manifest = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "reference"}, "spec": spec}
    spec_file.write_text(yaml.safe_dump(manifest))
    store = RunStore(directory / "out")
    step = LocalRunner(load_manifest(spec_file), spec_file, store, program=PROGRAM).run()
    return comparable(store.records()), step.status.model_dump(mode="json", by_alias=True, exclude_none=True)


def front_of(status: dict[str, Any]) -> list[str]:
    return sorted(entry["candidateId"] for entry in status.get("front") or [])


class PodLedger:
    """Every worker pod the test kubelet was given, by (generation, round, shard)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.pods: Counter[tuple[int, int, int]] = Counter()
        self.lock = threading.Lock()

    def __call__(self, pod: dict[str, Any]) -> None:
        key = pod_key(pod, self.namespace)
        if key is not None:
            with self.lock:
                self.pods[key] += 1


@pytest.fixture
def proxy(control_plane: ControlPlane) -> Iterator[FaultProxy]:
    with proxy_for(control_plane) as running:
        yield running


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="sd-chaos-"))
    try:
        yield directory
    finally:
        if not os.environ.get("SUSTAINDIFFUSION_KEEP_TEST_DIRS"):
            shutil.rmtree(directory, ignore_errors=True)


def evaluations(api: client.ApiClient, namespace: str, name: str) -> int:
    counters = (get_search(api, namespace, name).get("status") or {}).get("evaluations") or {}
    return int(counters.get("succeeded", 0)) + int(counters.get("failed", 0))


def finished(api: client.ApiClient, namespace: str, name: str) -> bool:
    return (get_search(api, namespace, name).get("status") or {}).get("phase") in ("Succeeded", "Failed")


# --------------------------------------------------------------------------- kills


def test_the_operator_killed_at_random_moments_loses_and_repeats_nothing(
    control_plane: ControlPlane,
    api_client: client.ApiClient,
    crd_installed: None,
    test_kubelet: TestKubelet,
    namespace: str,
    proxy: FaultProxy,
    workdir: Path,
) -> None:
    kills = scaled(6, 20)
    spec = standin_spec(
        algorithm={"populationSize": 8, "generations": kills + 2},  # long enough for every kill
        execution={"candidatesPerPod": 2, "parallelism": 2},
    )
    expected, expected_status = reference(spec, workdir / "reference")
    # A kill is armed on a kind of request the operator makes: when the proxy sees it, the test
    # kills the operator. "Random" moments are the n-th request of any kind, n drawn from the seed:
    # a random point of the operator's own work, never a guessed delay.
    armed: dict[str, Any] = {"match": None, "hit": threading.Event(), "lose": True}
    archive_prefix = f"/api/v1/namespaces/{namespace}/configmaps"
    status_path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/chaos/status"

    def archive_write(method: str, path: str) -> bool:
        # A chunk's append (PATCH) or a ConfigMap's creation (a new chunk, or a round's task).
        return path.startswith(archive_prefix) and (
            (method == "PATCH" and "-archive-" in path) or (method == "POST" and path == archive_prefix)
        )

    def status_write(method: str, path: str) -> bool:
        return method == "PATCH" and path == status_path

    def nth_request(n: int) -> Callable[[str, str], bool]:
        seen = itertools.count(1)
        return lambda method, path: "/leases/" not in path and next(seen) >= n

    def rule(number: int, method: str, path: str) -> Fault | None:
        match = armed["match"]
        if match is not None and match(method, path):
            armed["match"] = None
            armed["hit"].set()
            # Lost: applied upstream, and the operator never hears back before it dies.
            return Fault.lost() if armed["lose"] else None
        return None

    proxy.rule = rule
    ledger = PodLedger(namespace)
    test_kubelet.faults.append(ledger)
    operator = OperatorProcess(
        control_plane, namespace, workdir, kubeconfig=proxied_kubeconfig(control_plane, proxy, workdir)
    )
    moments: Counter[str] = Counter()
    recoveries: list[float] = []
    rng = random.Random(SEED)
    kinds = itertools.cycle(["archive append", "random", "status write", "random"])
    try:
        operator.start()
        with standin_workers(test_kubelet, namespace):
            create_search(api_client, namespace, "chaos", spec)
            for _ in range(kills):
                if finished(api_client, namespace, "chaos"):
                    break
                moment = next(kinds)
                armed["hit"].clear()
                armed["lose"] = moment != "random"
                armed["match"] = {
                    "archive append": archive_write,
                    "status write": status_write,
                    "random": nth_request(rng.randint(1, 25)),
                }[moment]
                # A generous bound, not a trigger: the operator writes its archive and status
                # within seconds while the search runs; a search with nothing left to write
                # (finished meanwhile) is killed without a request in flight.
                if not armed["hit"].wait(60):
                    armed["match"] = None
                    moment = f"{moment} (nothing to interrupt)"
                before = evaluations(api_client, namespace, "chaos")
                operator.kill()
                moments[moment] += 1
                restarted = time.monotonic()
                operator.start()

                def progressed(before: int = before) -> bool:
                    return evaluations(api_client, namespace, "chaos") > before or finished(
                        api_client, namespace, "chaos"
                    )

                try:
                    wait_until(
                        progressed,
                        60,
                        interval=0.2,
                        what="progress after a restart",
                    )
                    recoveries.append(time.monotonic() - restarted)
                except TimeoutError:
                    pass  # waiting on workers, not on the operator: the final wait tells
            search = wait_phase(api_client, namespace, "chaos", operator)
    finally:
        operator.kill()
        test_kubelet.faults.remove(ledger)
    records = archive_records(api_client, namespace, "chaos")
    assert comparable(records) == expected
    assert front_of(search["status"]) == front_of(expected_status)
    assert search["status"]["evaluations"] == expected_status["evaluations"]
    twice = {key: count for key, count in ledger.pods.items() if count > 1}
    assert not twice, f"shards run more than once: {twice}"
    assert sum(moments.values()) == kills
    assert {"archive append", "status write"} <= set(moments), moments
    recoveries.sort()
    print(
        f"\nchaos kills: {sum(moments.values())} ({dict(moments)}); time from restart to progress: "
        f"median {recoveries[len(recoveries) // 2] if recoveries else float('nan'):.1f} s, "
        f"max {max(recoveries, default=float('nan')):.1f} s ({len(recoveries)} measured); "
        f"{len(records)} records, equal to the undisturbed run's"
    )


# --------------------------------------------------------------------------- worker pods


def test_a_fifth_of_the_worker_pods_fail_and_each_failure_is_counted_with_its_reason(
    api_client: client.ApiClient,
    operator: OperatorProcess,
    test_kubelet: TestKubelet,
    namespace: str,
    workdir: Path,
) -> None:
    """Without retries, each failed pod is its shard's end: an exit code or an OOM kill or a deletion
    is recorded with that reason; an eviction (a disruption, not the shard's fault) is not counted,
    and the shard runs again."""
    rng = random.Random(SEED + 1)
    spec = standin_spec(
        algorithm={"populationSize": scaled(10, 24), "generations": scaled(3, 6)},
        execution={"candidatesPerPod": 1, "parallelism": 4, "retriesPerCandidate": 0},
    )
    kinds = itertools.cycle(["exit", "oom", "delete", "evict"])
    planned: dict[str, str] = {}  # pod name -> the fault it gets
    members: dict[str, list[str]] = {}  # pod name -> the candidates of its shard
    lock = threading.Lock()
    core = client.CoreV1Api(api_client)

    def fail(pod: dict[str, Any]) -> tuple[int, str] | None:
        key = pod_key(pod, namespace)
        if key is None or key[0] == 0:
            return None  # the defaults' evaluation is the search's yardstick: a failure there ends it
        name = pod["metadata"]["name"]
        with lock:
            if rng.random() >= 0.2:
                return None
            planned[name] = kind = next(kinds)
        task_map = core.read_namespaced_config_map(
            names.task_config_map_name("flaky", key[0], key[1]), namespace
        )
        task = EvaluationTask.model_validate_json((task_map.data or {})[TASK_KEY])
        members[name] = [c.candidate_id for c in task.shard(key[2])]
        return {"exit": (1, "Error"), "oom": (137, "OOMKilled")}.get(kind)

    def slow_for_disruption(pod: dict[str, Any], argv: list[str]) -> list[str] | None:
        if planned.get(pod["metadata"]["name"]) in ("delete", "evict"):
            return ["/bin/sleep", "120"]  # running until the test deletes or evicts it
        return None

    stop = threading.Event()

    def disruptor() -> None:
        done: set[str] = set()
        while not stop.wait(0.2):
            for name, kind in list(planned.items()):
                if name in done or kind not in ("delete", "evict"):
                    continue
                try:
                    running = core.read_namespaced_pod(name, namespace).status.phase == "Running"
                except ApiException:
                    continue
                if not running:
                    continue
                done.add(name)
                if kind == "delete":
                    core.delete_namespaced_pod(name, namespace)
                else:
                    eviction = {"metadata": {"name": name, "namespace": namespace}}
                    core.create_namespaced_pod_eviction(name, namespace, eviction)

    thread = threading.Thread(target=disruptor, daemon=True)
    test_kubelet.faults.append(fail)
    test_kubelet.programs.insert(0, slow_for_disruption)
    thread.start()
    try:
        with standin_workers(test_kubelet, namespace):
            create_search(api_client, namespace, "flaky", spec)
            search = wait_phase(api_client, namespace, "flaky", operator)
    finally:
        stop.set()
        test_kubelet.faults.remove(fail)
        test_kubelet.programs.remove(slow_for_disruption)
    records = {r.candidate_id: r for r in archive_records(api_client, namespace, "flaky")}
    expected_reason = {
        "exit": "code 1 (Error)",
        "oom": "code 137 (OOMKilled)",
        "delete": "deleted",  # its kubelet reported exit 137, but the Job deleted the pod before we read it
    }
    expected_failures = {
        candidate: expected_reason[kind]
        for name, kind in planned.items()
        if kind in expected_reason
        for candidate in members[name]
    }
    failed = {cid: r.result.reason or "" for cid, r in records.items() if not r.result.ok}
    assert set(failed) == set(expected_failures)
    deleted = ("code 137 (Error)", "pods were deleted")
    assert all(
        expected_failures[cid] in reason
        or (expected_failures[cid] == "deleted" and any(d in reason for d in deleted))
        for cid, reason in failed.items()
    ), failed
    evicted = [members[name][0] for name, kind in planned.items() if kind == "evict"]
    # Disruptions are retried, not counted: an evicted shard fails only if its next pod was made to.
    assert all(records[cid].result.ok or cid in expected_failures for cid in evicted)
    counters = search["status"]["evaluations"]
    assert (counters["failed"], counters["succeeded"]) == (len(failed), len(records) - len(failed))
    made = Counter(planned.values())
    assert set(made) == {"exit", "oom", "delete", "evict"}, made
    print(
        f"\nchaos pods: {sum(made.values())} worker pods made to fail {dict(made)}; {len(failed)} candidates "
        "recorded failed with their pod's reason, evicted pods retried uncounted"
    )


# --------------------------------------------------------------------------- reports


def malformed_reports(rng: random.Random, task: EvaluationTask, shard: int) -> str:
    """A termination message a hostile or broken worker could leave: one of many kinds."""
    members = task.shard(shard)
    good = [fake_task_result(Candidate(m.candidate_id, task.generation, m.settings), task) for m in members]
    text = encode_report(ShardReport(generation=task.generation, shard=shard, results=good))
    kind = rng.randrange(12)
    if kind == 0:
        return text[: rng.randrange(1, max(2, len(text)))]  # cut short
    if kind == 1:
        return "".join(rng.choice('{}[],:"0123456789.eE+-aNIfinity ') for _ in range(rng.randrange(1, 300)))
    if kind == 2:
        return text.replace("0.", "1e400", 1)  # an infinite metric
    if kind == 3:
        return text.replace(",0.", ",NaN,", 1)
    if kind == 4:
        return text.replace(members[0].candidate_id, "0000000000000bad")  # forged id
    if kind == 5:
        return text.replace(f'"s":{shard}', f'"s":{shard + 1}')  # another shard's
    if kind == 6:
        return text.replace(f'"g":{task.generation}', f'"g":{task.generation + 7}')
    if kind == 7:
        empty = ShardReport(generation=task.generation, shard=shard, fatal="CUDA error: device-side assert")
        return encode_report(empty)  # fatal, yet exit 0
    if kind == 8:
        return '{"v":1,"g":' + str(task.generation) + ',"s":' + str(shard) + ',"r":[' + "[" * 2000 + "]"
    if kind == 9:
        return text.replace(",1,", ",-5,", 1)  # a negative value where a metric belongs
    if kind == 10:
        return ""  # no report at all
    rows = '{"v":1,"g":%d,"s":%d,"r":[["%s",1,0.5,0.5,0.5,1,1,1,1,0,4],["%s",1,0.5,0.5,0.5,1,1,1,1,0,4]]}'
    return rows % (task.generation, shard, members[0].candidate_id, members[0].candidate_id)  # twice


def test_malformed_partial_forged_and_fatal_reports_never_wedge_a_search(
    api_client: client.ApiClient,
    operator: OperatorProcess,
    test_kubelet: TestKubelet,
    namespace: str,
    workdir: Path,
) -> None:
    rng = random.Random(SEED + 2)
    spec = standin_spec(
        algorithm={"populationSize": scaled(16, 40), "generations": scaled(2, 5)},
        execution={"candidatesPerPod": 1, "parallelism": 4, "retriesPerCandidate": 1},
    )
    expected, _ = reference(spec, workdir / "reference")
    core = client.CoreV1Api(api_client)
    tried: list[str] = []
    refused: list[str] = []

    def hostile_first_round(pod: dict[str, Any]) -> tuple[int, str, str] | None:
        key = pod_key(pod, namespace)
        if key is None or key[0] == 0 or key[1] != 0:
            return None  # the baseline and the follow-up rounds run for real
        task_map = core.read_namespaced_config_map(names.task_config_map_name("hostile", key[0]), namespace)
        task = EvaluationTask.model_validate_json((task_map.data or {})[TASK_KEY])
        message = malformed_reports(rng, task, key[2])
        tried.append(message)
        try:
            decode_report(message, generation=task.generation, shard=key[2], members=task.members(key[2]))
        except ReportError:
            refused.append(message)
        return 0, "Completed", message

    search = run_standin_search(
        api_client, test_kubelet, operator, namespace, "hostile", spec, [hostile_first_round]
    )
    records = archive_records(api_client, namespace, "hostile")
    assert comparable(records) == expected  # every candidate once, with the real worker's values
    assert search["status"]["phase"] == "Succeeded"
    assert len(refused) >= len(tried) * 3 // 4  # nearly every one is unusable (a few edits change nothing)
    print(
        f"\nchaos reports: {len(tried)} hostile termination messages ({len(refused)} unusable), "
        "0 wedges, archive as undisturbed"
    )


# --------------------------------------------------------------------------- API faults


def test_api_faults_and_partitions_between_the_operator_and_the_api_server(
    control_plane: ControlPlane,
    api_client: client.ApiClient,
    crd_installed: None,
    test_kubelet: TestKubelet,
    namespace: str,
    proxy: FaultProxy,
    workdir: Path,
) -> None:
    spec = standin_spec(algorithm={"populationSize": 8, "generations": scaled(3, 8)})
    expected, expected_status = reference(spec, workdir / "reference")
    faults = [
        Fault.status_code(409),
        Fault.status_code(429),
        Fault.status_code(500),
        Fault.status_code(503),
        Fault.status_code(403),
        Fault.timeout(4.0),  # past the operator's 2-s read timeout
        Fault.reset(),
        Fault.lost(),
    ]
    every = scaled(6, 4)

    status_written = threading.Event()
    status_path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/proxied/status"

    def rule(number: int, method: str, path: str) -> Fault | None:
        if method == "PATCH" and path == status_path:
            status_written.set()
        if "/leases/" in path:
            return None  # the election has its own test; a lost lease ends the process by design
        return faults[(number // every) % len(faults)] if number % every == 0 else None

    proxy.rule = rule
    operator = OperatorProcess(
        control_plane,
        namespace,
        workdir,
        kubeconfig=proxied_kubeconfig(control_plane, proxy, workdir),
        extra_args=("--api-timeout-seconds", "2"),
    )
    partitions = scaled(2, 5)
    try:
        operator.start()
        with standin_workers(test_kubelet, namespace):
            create_search(api_client, namespace, "proxied", spec)
            for _ in range(partitions):
                # Each partition starts as the operator writes the search's status (a point it
                # reports through the proxy), not after a guessed delay.
                status_written.clear()
                if not status_written.wait(60) or finished(api_client, namespace, "proxied"):
                    break  # a bound, not a trigger: a running search writes its status in seconds
                proxy.blackhole(True)
                time.sleep(3)  # the partition's length: shorter than the Lease's renew deadline
                proxy.blackhole(False)
            search = wait_phase(api_client, namespace, "proxied", operator)
    finally:
        operator.kill()
    assert comparable(archive_records(api_client, namespace, "proxied")) == expected
    assert front_of(search["status"]) == front_of(expected_status)
    assert operator.starts == 1  # nothing needed a person (or a restart) to intervene
    injected = dict(sorted(proxy.faults_injected.items()))
    assert {f.label for f in faults} <= set(injected), injected
    print(f"\nchaos proxy: {proxy.requests} requests, faults injected {injected}")


# --------------------------------------------------------------------------- spec changes


def test_execution_and_generations_patched_mid_generation(
    api_client: client.ApiClient,
    operator: OperatorProcess,
    test_kubelet: TestKubelet,
    namespace: str,
    workdir: Path,
) -> None:
    spec = standin_spec(algorithm={"populationSize": 10, "generations": 2}, execution={"candidatesPerPod": 2})
    final = standin_spec(
        algorithm={"populationSize": 10, "generations": 3},
        execution={"candidatesPerPod": 3, "parallelism": 1},
    )
    expected, _ = reference(final, workdir / "reference")
    custom = client.CustomObjectsApi(api_client)
    held = threading.Event()
    released = workdir / "generation-1-released"

    def hold_generation_one(pod: dict[str, Any], argv: list[str]) -> list[str] | None:
        key = pod_key(pod, namespace)
        if key is not None and key[0] == 1 and not held.is_set():
            # Held until the test has patched the spec (it creates `released`): the patch lands
            # while generation 1 runs, however slow the machine.
            wait = f"while [ ! -e {released} ]; do sleep 0.1; done"
            return ["/bin/sh", "-c", f"{wait}; exec {' '.join(PROGRAM)} {' '.join(argv[1:])}"]
        return None

    test_kubelet.programs.insert(0, hold_generation_one)
    try:
        with standin_workers(test_kubelet, namespace):
            create_search(api_client, namespace, "patched", spec)
            wait_until(
                lambda: (
                    int(
                        (get_search(api_client, namespace, "patched").get("status") or {}).get(
                            "generation", 0
                        )
                    )
                    == 1
                ),
                60,
                what="generation 1 in flight",
            )
            custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                "patched",
                {
                    "spec": {
                        "execution": {"candidatesPerPod": 3, "parallelism": 1},
                        "algorithm": {"generations": 3},
                    }
                },
            )
            held.set()
            released.touch()
            search = wait_phase(api_client, namespace, "patched", operator)
    finally:
        test_kubelet.programs.remove(hold_generation_one)
    assert comparable(archive_records(api_client, namespace, "patched")) == expected
    assert search["status"]["generationProgress"] == "3/3"
    assert search["status"]["observedGeneration"] == 2
