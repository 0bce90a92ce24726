"""The operator end to end: the real operator process, the real control plane, the real Job
controller, and the real worker on the tiny models, run by the test kubelet."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.kube import names
from sustaindiffusion.local.study import ARM_LABEL, RUN_LABEL, STUDY_LABEL
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.records import ArchiveRecord
from tests.e2e.conftest import fresh_namespace, running_operator
from tests.support.controlplane import ControlPlane
from tests.support.kubelet import TestKubelet
from tests.support.processes import wait_until
from tests.support.searches import (
    SEARCH_TIMEOUT,
    OperatorProcess,
    archive_records,
    create_search,
    evaluated_candidates,
    get_search,
    search_spec,
    wait_event,
    wait_phase,
)


@dataclass
class FinishedSearch:
    """An undisturbed search of `search_spec`, read back while its operator still ran."""

    namespace: str
    status: dict[str, Any]
    records: list[ArchiveRecord]
    evaluated: list[str]
    jobs_left: int
    event_reasons: set[str]
    metrics: str
    report_page: str
    report_plot: bool


@pytest.fixture(scope="module")
def undisturbed(
    control_plane: ControlPlane,
    api_client: client.ApiClient,
    crd_installed: None,
    test_kubelet: TestKubelet,
    tiny_models: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FinishedSearch]:
    """The reference run that the killed run is compared with; its own namespace and operator, so
    any test of this module can use it, alone or not."""
    with fresh_namespace(api_client) as namespace, running_operator(control_plane, namespace) as operator:
        create_search(api_client, namespace, "quick", search_spec(tiny_models))
        search = wait_phase(api_client, namespace, "quick", operator)
        wait_event(
            api_client,
            namespace,
            lambda e: e.involved_object.name == "quick" and e.reason == "SearchFinished",
            "the SearchFinished event of the search",
        )
        events = client.CoreV1Api(api_client).list_namespaced_event(namespace).items
        url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
        metrics = urllib.request.urlopen(url, timeout=5).read().decode()
        report_dir = tmp_path_factory.mktemp("report")
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
                str(control_plane.kubeconfig),
                "--out",
                str(report_dir),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield FinishedSearch(
            namespace=namespace,
            status=search["status"],
            records=archive_records(api_client, namespace, "quick"),
            evaluated=evaluated_candidates(test_kubelet, namespace),
            jobs_left=len(client.BatchV1Api(api_client).list_namespaced_job(namespace).items),
            event_reasons={str(e.reason) for e in events if e.involved_object.name == "quick"},
            metrics=metrics,
            report_page=(report_dir / "index.html").read_text(),
            report_plot=(report_dir / "front_pairs.png").exists(),
        )


def test_a_search_runs_through_real_jobs_to_succeeded(undisturbed: FinishedSearch) -> None:
    status, records = undisturbed.status, undisturbed.records
    # Every evaluation is archived: the baseline, then three generations of up to six candidates.
    assert status["evaluations"]["succeeded"] + status["evaluations"]["failed"] == len(records)
    assert {r.generation for r in records} == {0, 1, 2, 3}
    assert len({r.result.candidate_id for r in records}) == len(records)
    assert status["generationProgress"] == "3/3"
    assert status["front"]
    assert status["frontSize"] >= len(status["front"])
    assert {entry["candidateId"] for entry in status["front"]} <= {r.result.candidate_id for r in records}
    assert all(entry["images"] > 0 for entry in status["front"])
    with_intervals = [entry for entry in status["front"] if entry.get("intervals")]
    assert with_intervals  # the tiny VQA model's answers map to groups
    for entry in with_intervals:
        for name, interval in entry["intervals"].items():
            assert interval["low"] <= entry["objectives"][name] <= interval["high"]
    assert status["baselines"][0]["name"] == "defaults"
    assert status["hypervolume"] >= 0
    assert status["energy"]["estimated"] is True  # no GPU and no RAPL on this machine
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Complete"]["status"] == "True"
    assert conditions["Complete"]["reason"] == "GenerationsCompleted"
    assert status["completionTime"]
    # Finished generations leave no Jobs behind; the archive stays, owned by the search.
    assert undisturbed.jobs_left == 0
    assert sorted(undisturbed.evaluated) == sorted(r.result.candidate_id for r in records)
    assert {"GenerationStarted", "GenerationFinished", "SearchFinished"} <= undisturbed.event_reasons
    namespace = undisturbed.namespace
    assert f'sustaindiffusion_search_generation{{namespace="{namespace}",search="quick"}} 4.0' in (
        undisturbed.metrics
    )
    assert "sustaindiffusion_search_energy_joules_total" in undisturbed.metrics
    # The same report as for local runs, read from the cluster.
    assert all(entry["candidateId"] in undisturbed.report_page for entry in status["front"])
    assert undisturbed.report_plot


def test_killing_the_operator_mid_generation_loses_and_repeats_nothing(
    api_client: client.ApiClient,
    operator: OperatorProcess,
    test_kubelet: TestKubelet,
    namespace: str,
    tiny_models: Path,
    undisturbed: FinishedSearch,
) -> None:
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
    assert sorted(ids) == sorted(r.result.candidate_id for r in undisturbed.records)  # none skipped
    assert sorted(entry["candidateId"] for entry in search["status"]["front"]) == sorted(
        entry["candidateId"] for entry in undisturbed.status["front"]
    )
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
    wait_event(
        api_client,
        namespace,
        lambda e: e.reason == "CandidateFailed" and "OOMKilled" in e.message,
        "a CandidateFailed event naming the OOM kill",
    )


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
    wait_event(
        api_client,
        namespace,
        lambda e: e.reason == "WorkersPending" and e.involved_object.name == "stuck",
        "the WorkersPending event",
    )
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


def test_a_search_with_held_out_validation_fills_it_into_its_status_and_its_study_analysis(
    api_client: client.ApiClient,
    operator: OperatorProcess,
    namespace: str,
    tiny_models: Path,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    spec = search_spec(tiny_models)
    spec["algorithm"]["generations"] = 1
    held_out = ["Photo portrait of a nurse at work", "Photo portrait of a teacher in class"]
    client.CoreV1Api(api_client).create_namespaced_config_map(
        namespace, {"metadata": {"name": "held-out"}, "data": {"prompts.txt": "\n".join(held_out) + "\n"}}
    )
    spec["validation"] = {
        "prompts": {"configMapRef": {"name": "held-out"}},
        "imagesPerPrompt": 2,
        "points": 2,
    }
    study = {STUDY_LABEL: "e2e", ARM_LABEL: "validated", RUN_LABEL: "0"}  # as `study expand` labels
    create_search(api_client, namespace, "validated", spec, labels=study)
    search = wait_phase(api_client, namespace, "validated", operator)
    validation = search["status"]["validation"]
    assert validation["complete"] is True
    assert (validation["prompts"], validation["imagesPerPrompt"]) == (2, 2)
    points = validation["points"]
    assert points[0]["role"] == "defaults"
    assert 2 <= len(points) <= 3
    for point in points:
        assert set(point["objectives"]) == {"GenderBias", "EthnicBias", "Quality"}
        assert point["wins"] + point["pareto"] + point["losses"] == 2
        assert point["inSample"]
    records = archive_records(api_client, namespace, "validated")
    assert sum(r.stage == "validation" for r in records) == len(points)
    assert {r.generation for r in records if r.stage == "validation"} == {2}
    # The study's analysis, from the cluster: its labelled searches, replayed from their archives.
    analysis = tmp_path / "analysis"
    analysed = subprocess.run(
        [
            *(sys.executable, "-m", "sustaindiffusion.local.cli", "analyze", "--study", "e2e"),
            *(
                "--namespace",
                namespace,
                "--kubeconfig",
                str(control_plane.kubeconfig),
                "--out",
                str(analysis),
            ),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert analysed.returncode == 0, analysed.stderr
    assert "1 runs of 1 arms" in analysed.stdout
    arms = (analysis / "arms.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in arms[1:]] == ["defaults", "validated"]
    held_out = (analysis / "held-out.csv").read_text().splitlines()
    knee = [line for line in held_out if line.startswith("validated,knee,1,2,")]
    assert knee, held_out  # 2 held-out prompts, won, traded or lost against the defaults
    assert (analysis / "index.html").exists()


def test_held_out_prompts_that_are_search_prompts_stop_the_start_and_refused_edits_lose_nothing(
    api_client: client.ApiClient, operator: OperatorProcess, namespace: str, tiny_models: Path
) -> None:
    """Held-out prompts in a ConfigMap (the API server's rule cannot read them) are checked when the
    search starts: one that is the search prompt (other case, spacing, a final period) fails it with
    a condition and an event, before any Job; fixed, the search starts. Edits that the API server
    refuses for the new rules leave the running search on its stored spec."""
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    spec = search_spec(tiny_models)
    spec["algorithm"]["generations"] = 1
    search_prompt = spec["prompts"]["inline"][0].rstrip(".")
    prompts = ["Photo portrait of a nurse at work", f"  {search_prompt.upper()} . "]
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "held-out"}, "data": {"prompts.txt": "\n".join(prompts)}}
    )
    spec["validation"] = {
        "prompts": {"configMapRef": {"name": "held-out"}},
        "imagesPerPrompt": 1,
        "points": 1,
    }
    create_search(api_client, namespace, "overlap", spec)
    failed = wait_phase(api_client, namespace, "overlap", operator, phase="Failed")["status"]
    condition = next(c for c in failed["conditions"] if c["type"] == "Failed")
    assert condition["reason"] == "PromptsOverlap"
    # The operator reads a ConfigMap's lines stripped, as it would generate them.
    assert f'held-out prompt "{search_prompt.upper()} ." is also a search prompt' in condition["message"]
    wait_event(api_client, namespace, lambda e: e.reason == "PromptsOverlap", "the PromptsOverlap event")
    assert not client.BatchV1Api(api_client).list_namespaced_job(namespace).items

    core.patch_namespaced_config_map("held-out", namespace, {"data": {"prompts.txt": prompts[0]}})
    # A metadata change wakes the search at once (the ConfigMap is read when the search steps).
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "overlap", {"metadata": {"annotations": {"fixed": "prompts"}}}
    )
    wait_until(
        lambda: (get_search(api_client, namespace, "overlap").get("status") or {}).get("phase") == "Running",
        60,
        what="the fixed search to start",
    )
    for change, message in (
        ({"execution": {"resources": {"limits": {"nvidia.com/gpu": "0.5"}}}}, "must be an integer"),
        ({"validation": {"prompts": {"inline": [search_prompt]}}}, "is also a search prompt"),
    ):
        with pytest.raises(client.ApiException) as refused:
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "overlap", {"spec": change}
            )
        assert refused.value.status == 422
        assert message in str(refused.value.body)
    search = wait_phase(api_client, namespace, "overlap", operator)
    assert search["metadata"]["generation"] == 1  # no refused edit reached the stored spec
    assert search["status"]["observedGeneration"] == 1
    assert search["status"]["validation"]["complete"] is True
    assert search["status"]["validation"]["prompts"] == 1
    assert {r.generation for r in archive_records(api_client, namespace, "overlap")} == {0, 1, 2}


def test_a_screened_search_with_more_evidence_survives_operator_kills_and_repeats_nothing(
    api_client: client.ApiClient,
    operator: OperatorProcess,
    test_kubelet: TestKubelet,
    namespace: str,
    tiny_models: Path,
) -> None:
    """algorithm.screening and algorithm.evidence through the operator: one image per prompt first,
    the other two for the survivors, one more per generation for two front points (up to five);
    the operator is killed once the first screening results are archived and once the first
    survivors' rest is, and the search still evaluates every part of every candidate once."""
    spec = search_spec(tiny_models)
    spec["prompts"]["imagesPerPrompt"] = 3
    spec["algorithm"] |= {
        "generations": 3,
        "screening": {"imagesPerPrompt": 1, "confidence": 0.8},
        "evidence": {"imagesPerPrompt": 1, "maxImagesPerPrompt": 5, "points": 2},
    }
    create_search(api_client, namespace, "screened", spec)
    for stage in ("screen", "rest"):

        def archived(stage: str = stage) -> bool:
            records = archive_records(api_client, namespace, "screened")
            finished = (get_search(api_client, namespace, "screened").get("status") or {}).get("phase")
            return finished == "Succeeded" or any(r.stage == stage for r in records)

        wait_until(archived, SEARCH_TIMEOUT, interval=0.3, what=f"a {stage} record")
        operator.kill()
        operator.start()
    search = wait_phase(api_client, namespace, "screened", operator)
    status = search["status"]
    records = archive_records(api_client, namespace, "screened")
    keys = [r.key for r in records]
    assert len(keys) == len(set(keys)), "a part was archived twice"
    screened = {r.candidate_id for r in records if r.stage == "screen"}
    rest = {r.candidate_id for r in records if r.stage == "rest"}
    assert screened
    assert rest, "some candidates survived the screening"
    assert rest <= screened
    assert all(
        r.result.metrics is not None and r.result.metrics.images == 1 for r in records if r.stage == "screen"
    )
    evaluated = evaluated_candidates(test_kubelet, namespace)
    assert len(evaluated) == len(records), "a part of a candidate was evaluated twice"
    assert status["screening"]["screened"] == len(screened)
    assert status["screening"]["screenedOut"] == len(screened) - len(rest)
    assert status["screening"]["imagesSaved"] == 2 * status["screening"]["screenedOut"]
    evidence = [r for r in records if r.stage == "evidence"]
    assert evidence, "front points got more evidence"
    assert all(r.result.metrics is not None and r.result.metrics.images == 1 for r in evidence if r.result.ok)
    for entry in status["front"]:
        if entry["candidateId"] in rest:
            assert 3 <= entry["images"] <= 5
        assert entry["candidateId"] not in screened - rest  # screened out: never on the front
    # The archive replays to the state the operator reported: the same decisions on every restart.
    replayed = SearchEngine.from_archive(SustainSearchSpec.model_validate(spec), records)
    assert replayed.outcome().finished
    assert sorted(p.candidate.candidate_id for p in replayed.front()) == sorted(
        entry["candidateId"] for entry in status["front"]
    )
    assert operator.starts >= 2
