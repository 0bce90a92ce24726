"""The operator end to end: the real operator process, the real control plane, the real Job
controller, and the real worker on the tiny models, run by the test kubelet."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sustaindiffusion.api.keywords import DEFAULT_NEGATIVE_POOL, DEFAULT_POSITIVE_POOL
from sustaindiffusion.api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from sustaindiffusion.kube import names
from sustaindiffusion.kube.builders import ARCHIVE_KEY
from sustaindiffusion.search.records import parse_lines
from tests.support.controlplane import ControlPlane
from tests.support.kubelet import TestKubelet
from tests.support.processes import ManagedProcess, free_port, wait_until
from tests.support.tiny import ensure_tiny_models

SEARCH_TIMEOUT = 300


class OperatorProcess:
    """The operator as its own process (python -m sustaindiffusion.operator), killable at will."""

    def __init__(self, control_plane: ControlPlane, namespace: str, workdir: Path) -> None:
        self.control_plane, self.namespace, self.workdir = control_plane, namespace, workdir
        self.process: ManagedProcess | None = None
        self.metrics_port = 0
        self.starts = 0

    def start(self) -> None:
        self.metrics_port = free_port()
        env = dict(os.environ, KUBECONFIG=str(self.control_plane.kubeconfig), PYTHONUNBUFFERED="1")
        self.starts += 1
        self.process = ManagedProcess(
            f"operator-{self.starts}",
            [
                sys.executable,
                "-m",
                "sustaindiffusion.operator",
                "--namespace",
                self.namespace,
                "--metrics-port",
                str(self.metrics_port),
                "--metrics-address",
                "127.0.0.1",
                "--health-port",
                "0",
            ],
            self.workdir / f"operator-{self.starts}.log",
            env=env,
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers, as a crashed or evicted operator."""
        if self.process is not None:
            self.process.signal_group(signal.SIGKILL)
            self.process.stop(grace_seconds=5)
            self.process = None

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.workdir.glob("operator-*.log"))
        )


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    return ensure_tiny_models()


@pytest.fixture
def operator(
    control_plane: ControlPlane, crd_installed: None, test_kubelet: TestKubelet, namespace: str
) -> Iterator[OperatorProcess]:
    workdir = Path(tempfile.mkdtemp(prefix="sd-operator-"))
    process = OperatorProcess(control_plane, namespace, workdir)
    process.start()
    try:
        yield process
    finally:
        process.kill()
        if not os.environ.get("SUSTAINDIFFUSION_KEEP_TEST_DIRS"):
            shutil.rmtree(workdir, ignore_errors=True)


def search_spec(tiny_models: Path, **execution: Any) -> dict[str, Any]:
    return {
        "model": {"id": str(tiny_models / "sd3"), "dtype": "float32", "width": 64, "height": 64},
        "prompts": {"inline": ["Photo portrait of a Software Engineer that codes."], "imagesPerPrompt": 1},
        "searchSpace": {
            "inferenceSteps": {"min": 1, "max": 3},
            "guidanceScale": {"min": 1.0, "max": 5.0, "step": 0.5},
            "positiveKeywords": {"pool": list(DEFAULT_POSITIVE_POOL[:4])},
            "negativeKeywords": {"pool": list(DEFAULT_NEGATIVE_POOL[:3])},
            "promptWeight": {"min": 0, "max": 2},
        },
        # Objectives computed from images only: equal on every run with the same seed (energy and
        # time are measured, so they vary from run to run).
        "objectives": [{"name": "GenderBias"}, {"name": "EthnicBias"}, {"name": "Quality"}],
        "scoring": {
            "vqaModel": {"id": str(tiny_models / "blip-vqa")},
            "quality": {"model": {"id": str(tiny_models / "clip")}},
            "humanFilter": {"enabled": False},
        },
        "algorithm": {"populationSize": 6, "generations": 3, "seed": 11},
        "execution": {
            "image": "sustaindiffusion/worker:test",
            "candidatesPerPod": 3,
            "parallelism": 2,
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": 1}},
            "retriesPerCandidate": 1,
            **execution,
        },
    }


def create_search(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def get_search(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    result: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return dict(result)


def wait_phase(
    api: client.ApiClient, namespace: str, name: str, operator: OperatorProcess, phase: str = "Succeeded"
) -> dict[str, Any]:
    def reached() -> bool:
        status = get_search(api, namespace, name).get("status") or {}
        if status.get("phase") == "Failed" and phase != "Failed":
            raise AssertionError(f"search failed: {status.get('message')}")
        return status.get("phase") == phase

    try:
        wait_until(reached, SEARCH_TIMEOUT, interval=1.0, what=f"search {name} to reach {phase}")
    except (TimeoutError, AssertionError) as error:
        raise AssertionError(f"{error}\n--- operator log ---\n{operator.log()}") from None
    return get_search(api, namespace, name)


def archive_records(api: client.ApiClient, namespace: str, name: str) -> list[Any]:
    config_maps = (
        client.CoreV1Api(api)
        .list_namespaced_config_map(namespace, label_selector=names.selector(name, names.COMPONENT_ARCHIVE))
        .items
    )
    ordered = sorted(config_maps, key=lambda cm: str(cm.metadata.name))
    return [record for cm in ordered for record in parse_lines((cm.data or {}).get(ARCHIVE_KEY, ""))]


def evaluated_candidates(kubelet: TestKubelet, namespace: str) -> list[str]:
    """Candidate ids the worker processes of this namespace finished, from their logs."""
    evaluated = []
    for log in sorted(kubelet.root.glob(f"{namespace}_*/container.log")):
        evaluated += re.findall(
            r"candidate ([0-9a-f]{16}): (?:Succeeded|Failed)", log.read_text(errors="replace")
        )
    return evaluated


@pytest.fixture(scope="module")
def reference_run() -> dict[str, Any]:
    """Filled by the uninterrupted search, compared with by the interrupted one."""
    return {}


def test_a_search_runs_through_real_jobs_to_succeeded(
    api_client: client.ApiClient,
    operator: OperatorProcess,
    test_kubelet: TestKubelet,
    namespace: str,
    tiny_models: Path,
    reference_run: dict[str, Any],
) -> None:
    create_search(api_client, namespace, "quick", search_spec(tiny_models))
    search = wait_phase(api_client, namespace, "quick", operator)
    status = search["status"]
    records = archive_records(api_client, namespace, "quick")
    # Every evaluation is archived: the baseline, then three generations of up to six candidates.
    assert status["evaluations"]["succeeded"] + status["evaluations"]["failed"] == len(records)
    assert {r.generation for r in records} == {0, 1, 2, 3}
    assert len({r.result.candidate_id for r in records}) == len(records)
    assert status["generationProgress"] == "3/3"
    assert status["front"]
    assert status["frontSize"] >= len(status["front"])
    assert {entry["candidateId"] for entry in status["front"]} <= {r.result.candidate_id for r in records}
    assert status["baselines"][0]["name"] == "defaults"
    assert status["hypervolume"] >= 0
    assert status["energy"]["estimated"] is True  # no GPU and no RAPL on this machine
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Complete"]["status"] == "True"
    assert status["completionTime"]
    # Finished generations leave no Jobs behind; the archive stays, owned by the search.
    jobs = client.BatchV1Api(api_client).list_namespaced_job(namespace).items
    assert not jobs
    evaluated = evaluated_candidates(test_kubelet, namespace)
    assert sorted(evaluated) == sorted(r.result.candidate_id for r in records)
    events = client.CoreV1Api(api_client).list_namespaced_event(namespace).items
    reasons = {e.reason for e in events if e.involved_object.name == "quick"}
    assert {"GenerationStarted", "GenerationFinished", "SearchFinished"} <= reasons
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    metrics = urllib.request.urlopen(url, timeout=5).read().decode()
    assert f'sustaindiffusion_search_generation{{namespace="{namespace}",search="quick"}} 4.0' in metrics
    assert "sustaindiffusion_search_energy_joules_total" in metrics
    # The same report as for local runs, read from the cluster.
    report_dir = operator.workdir / "report"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sustaindiffusion.local.cli",
            "report",
            "--search",
            "quick",
            "--namespace",
            namespace,
            "--kubeconfig",
            str(operator.control_plane.kubeconfig),
            "--out",
            str(report_dir),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    page = (report_dir / "index.html").read_text()
    assert all(entry["candidateId"] in page for entry in status["front"])
    assert (report_dir / "front_pairs.png").exists()
    reference_run["ids"] = [r.result.candidate_id for r in records]
    reference_run["front"] = sorted(entry["candidateId"] for entry in status["front"])


def test_killing_the_operator_mid_generation_loses_and_repeats_nothing(
    api_client: client.ApiClient,
    operator: OperatorProcess,
    test_kubelet: TestKubelet,
    namespace: str,
    tiny_models: Path,
    reference_run: dict[str, Any],
) -> None:
    if not reference_run:
        pytest.skip("needs the uninterrupted run of test_a_search_runs_through_real_jobs_to_succeeded first")
    create_search(api_client, namespace, "quick", search_spec(tiny_models))
    for generation in (1, 2):

        def reached(target: int = generation) -> bool:
            return (
                int((get_search(api_client, namespace, "quick").get("status") or {}).get("generation", 0))
                >= target
            )

        wait_until(reached, SEARCH_TIMEOUT, interval=0.5, what=f"generation {generation}")
        operator.kill()
        operator.start()
    search = wait_phase(api_client, namespace, "quick", operator)
    records = archive_records(api_client, namespace, "quick")
    ids = [r.result.candidate_id for r in records]
    assert sorted(ids) == sorted(reference_run["ids"])  # the same candidates, none skipped
    assert sorted(entry["candidateId"] for entry in search["status"]["front"]) == reference_run["front"]
    evaluated = evaluated_candidates(test_kubelet, namespace)
    assert len(evaluated) == len(set(evaluated)) == len(ids), "a candidate was evaluated twice"
    assert operator.starts == 3


def test_a_failing_shard_is_retried_then_recorded_and_the_search_goes_on(
    api_client: client.ApiClient,
    operator: OperatorProcess,
    test_kubelet: TestKubelet,
    namespace: str,
    tiny_models: Path,
) -> None:
    attempts: list[str] = []

    def oom_kill_shard_one_of_generation_one(pod: dict[str, Any]) -> tuple[int, str] | None:
        labels = pod["metadata"].get("labels") or {}
        index = (pod["metadata"].get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
        if (
            pod["metadata"]["namespace"] == namespace
            and labels.get(names.LABEL_GENERATION) == "1"
            and index == "1"
        ):
            attempts.append(pod["metadata"]["name"])
            return 137, "OOMKilled"
        return None

    test_kubelet.faults.append(oom_kill_shard_one_of_generation_one)
    try:
        create_search(api_client, namespace, "flaky", search_spec(tiny_models))
        search = wait_phase(api_client, namespace, "flaky", operator)
    finally:
        test_kubelet.faults.remove(oom_kill_shard_one_of_generation_one)
    assert len(attempts) == 2  # the first try and retriesPerCandidate = 1 retry
    failed = [r for r in archive_records(api_client, namespace, "flaky") if not r.result.ok]
    assert failed
    assert all(r.generation == 1 for r in failed)
    assert all("shard 1: worker exited with code 137 (OOMKilled)" in (r.result.reason or "") for r in failed)
    assert search["status"]["evaluations"]["failed"] == len(failed)
    events = client.CoreV1Api(api_client).list_namespaced_event(namespace).items
    assert any(e.reason == "CandidateFailed" and "OOMKilled" in e.message for e in events)


def test_a_suspended_job_is_queued_not_failed_and_resumes(
    api_client: client.ApiClient, operator: OperatorProcess, namespace: str, tiny_models: Path
) -> None:
    batch = client.BatchV1Api(api_client)
    create_search(api_client, namespace, "queued", search_spec(tiny_models, queueName="team-a"))
    job_name = names.job_name("queued", 0)
    wait_until(lambda: batch.read_namespaced_job(job_name, namespace), 60, what="the baseline Job")
    job = batch.read_namespaced_job(job_name, namespace)
    assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "team-a"
    # What Kueue does to a Job it has not admitted (or preempts): suspend it.
    batch.patch_namespaced_job(job_name, namespace, {"spec": {"suspend": True}})

    def queued() -> bool:
        conditions = (get_search(api_client, namespace, "queued").get("status") or {}).get("conditions") or []
        return any(c["type"] == "Queued" and c["status"] == "True" for c in conditions)

    wait_until(queued, 60, what="the Queued condition")
    status = get_search(api_client, namespace, "queued")["status"]
    assert status["phase"] == "Running"
    assert (
        batch.read_namespaced_job(job_name, namespace).spec.suspend is True
    )  # the operator never resumes it
    batch.patch_namespaced_job(job_name, namespace, {"spec": {"suspend": False}})  # admitted
    search = wait_phase(api_client, namespace, "queued", operator)
    assert search["status"]["evaluations"]["failed"] == 0


def test_deleting_a_search_removes_everything_it_owned(
    api_client: client.ApiClient, operator: OperatorProcess, namespace: str, tiny_models: Path
) -> None:
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    create_search(api_client, namespace, "doomed", search_spec(tiny_models))
    wait_until(lambda: batch.list_namespaced_job(namespace).items, 60, what="a worker Job")
    wait_until(
        lambda: core.list_namespaced_config_map(namespace, label_selector=names.LABEL_SEARCH).items,
        60,
        what="task ConfigMap",
    )
    operator.kill()  # deletion must not depend on the operator (no blocking finalizer)
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "doomed"
    )

    def all_gone() -> bool:
        owned = names.LABEL_SEARCH
        return not (
            batch.list_namespaced_job(namespace).items
            or core.list_namespaced_config_map(namespace, label_selector=owned).items
            or core.list_namespaced_pod(namespace).items
        )

    wait_until(all_gone, 120, what="garbage collection of the search's Jobs, ConfigMaps and pods")


def test_an_unschedulable_worker_pod_is_a_visible_condition(
    api_client: client.ApiClient, operator: OperatorProcess, namespace: str, tiny_models: Path
) -> None:
    spec = search_spec(tiny_models, nodeSelector={"nvidia.com/gpu.product": "NVIDIA-B200"})  # no such node
    create_search(api_client, namespace, "stuck", spec)

    def pending_condition() -> dict[str, Any] | None:
        conditions = (get_search(api_client, namespace, "stuck").get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "WorkersPending" and c["status"] == "True"), None)

    wait_until(pending_condition, 90, what="the WorkersPending condition")
    condition = pending_condition()
    assert condition is not None
    assert "unschedulable" in condition["message"]
    assert "node(s) didn't match Pod's node affinity/selector" in condition["message"]
    events = client.CoreV1Api(api_client).list_namespaced_event(namespace).items
    assert any(e.reason == "WorkersPending" and e.involved_object.name == "stuck" for e in events)
    assert get_search(api_client, namespace, "stuck")["status"]["phase"] == "Running"  # pending, not failed


def test_a_larger_generation_budget_resumes_a_finished_search(
    api_client: client.ApiClient, operator: OperatorProcess, namespace: str, tiny_models: Path
) -> None:
    spec = search_spec(tiny_models)
    spec["algorithm"]["generations"] = 1
    create_search(api_client, namespace, "extended", spec)
    first = wait_phase(api_client, namespace, "extended", operator)
    assert first["status"]["generationProgress"] == "1/1"
    before = len(archive_records(api_client, namespace, "extended"))
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "extended", {"spec": {"algorithm": {"generations": 2}}}
    )

    def running_again() -> bool:
        status = get_search(api_client, namespace, "extended").get("status") or {}
        return status.get("phase") == "Running" or status.get("generationProgress") == "2/2"

    wait_until(running_again, 60, what="the search to resume")
    final = wait_phase(api_client, namespace, "extended", operator)
    records = archive_records(api_client, namespace, "extended")
    assert final["status"]["generationProgress"] == "2/2"
    assert len(records) > before
    assert {r.generation for r in records} == {0, 1, 2}
    assert final["status"]["completionTime"]
    assert final["status"]["observedGeneration"] == 2
