"""The operator's side of MultiKueue, as pure functions and with stand-in API clients: portable
Jobs (the task in the pod template, a results finalizer, the search's uid on the pods), where a
round's Workload was placed, the round's pods read in that cluster (or said unreachable, naming it),
the results finalizer released once archived, and the worker-cluster credentials' directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.kube import builders, kueue, names
from sustaindiffusion.kube.classify import classify_round, job_signal
from sustaindiffusion.kube.clusters import WorkerClusters, WorkerClustersError
from sustaindiffusion.kube.executor import CLUSTER_UNREACHABLE, KubernetesExecutor
from sustaindiffusion.search.decisions import WORKERS_PENDING, Observation, decide
from sustaindiffusion.search.loop import RUNNING
from tests.support.tasks import task_of
from tests.unit.test_classify import IDS, TASK, job, report, succeeded
from tests.unit.test_kube_objects import SEARCH, spec


def test_a_portable_job_carries_its_task_and_holds_its_pods_results() -> None:
    task = task_of(spec(), generation=2, shards=2)
    job_manifest = builders.worker_job(SEARCH, spec(), task, portable=True)
    template = job_manifest["spec"]["template"]
    # The task in the pod template (MultiKueue copies the Job, not the ConfigMap), mounted as before.
    assert (
        EvaluationTask.model_validate_json(template["metadata"]["annotations"][builders.TASK_ANNOTATION])
        == task
    )
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    (item,) = volumes["task"]["downwardAPI"]["items"]
    assert item == {
        "path": builders.TASK_KEY,
        "fieldRef": {"fieldPath": f"metadata.annotations['{builders.TASK_ANNOTATION}']"},
    }
    assert "configMap" not in volumes["task"]
    assert template["metadata"]["finalizers"] == [builders.RESULTS_FINALIZER]
    assert template["metadata"]["labels"][names.LABEL_SEARCH_UID] == SEARCH.uid
    # A Job for this cluster only stays as it was.
    plain = builders.worker_job(SEARCH, spec(), task)["spec"]["template"]
    assert "finalizers" not in plain["metadata"]
    assert names.LABEL_SEARCH_UID not in plain["metadata"]["labels"]
    assert {v["name"]: v for v in plain["spec"]["volumes"]}["task"]["configMap"][
        "name"
    ] == "my-search-g0002-task"


def test_a_task_too_large_for_an_annotation_is_refused_with_the_reason() -> None:
    many = spec().model_copy(
        update={"prompts": spec().prompts.model_copy(update={"inline": ["x" * 900] * 300})}
    )
    task = task_of(many, shards=1)
    task = task.model_copy(update={"prompts": ["x" * 900] * 300})
    with pytest.raises(ValueError, match="more than a pod annotation holds"):
        builders.worker_job(SEARCH, spec(), task, portable=True)


def workload(created: str, cluster: str | None) -> dict[str, Any]:
    status = {"clusterName": cluster} if cluster else {}
    return {"metadata": {"creationTimestamp": created}, "status": status}


def test_the_newest_workload_says_where_the_job_runs() -> None:
    assert kueue.placed_cluster([]) is None
    assert kueue.placed_cluster([workload("2026-01-01T00:00:01Z", None)]) is None
    placed = [workload("2026-01-01T00:00:01Z", "worker-a"), workload("2026-01-01T00:00:02Z", "worker-b")]
    assert kueue.placed_cluster(placed) == "worker-b"


def test_selected_pods_count_without_the_local_jobs_uid() -> None:
    """In a worker cluster MultiKueue's copy of the Job owns the pods (another uid)."""
    remote = succeeded(0, report(0, IDS[0], IDS[1]), owner="uid-of-the-copy")
    assert classify_round(job(), [remote], TASK).shards == {}
    assert list(classify_round(job(), [remote], TASK, selected=True).shards) == [0]


def test_a_job_run_elsewhere_wakes_its_search_on_completed_indexes() -> None:
    here, elsewhere = job(), job()
    elsewhere["spec"]["managedBy"] = "kueue.x-k8s.io/multikueue"
    done_here = json.loads(json.dumps(here))
    done_here["status"]["completedIndexes"] = "0"
    done_elsewhere = json.loads(json.dumps(elsewhere))
    done_elsewhere["status"]["completedIndexes"] = "0"
    assert job_signal(done_here) == job_signal(here)  # its pod's success shows first, here
    assert job_signal(done_elsewhere) != job_signal(elsewhere)  # no pod here to show it


def test_an_unreachable_worker_cluster_is_a_condition_and_an_event_naming_it() -> None:
    observation = Observation(
        3,
        RUNNING,
        workers_pending="worker cluster worker-a, where MultiKueue placed generation 3, cannot be read",
        workers_pending_reason=CLUSTER_UNREACHABLE,
    )
    decision = decide(observation, {})
    (condition,) = [c for c in decision.conditions if c.type == WORKERS_PENDING]
    assert (condition.status, condition.reason) == (True, CLUSTER_UNREACHABLE)
    assert "worker-a" in (condition.message or "")
    assert [(e.reason, "worker-a" in e.message) for e in decision.events] == [(CLUSTER_UNREACHABLE, True)]


# ------------------------------------------------------------------ the executor, with stand-ins


class Response:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()

    def release_conn(self) -> None:
        pass


class StandInCore:
    """The CoreV1Api calls the executor makes, over a list of pods (or failing like a lost server)."""

    def __init__(self, pods: list[dict[str, Any]] | None = None, lost: bool = False) -> None:
        self.pods, self.lost = pods or [], lost
        self.conflicts = 0  # patches to refuse with 409 first
        self.selectors: list[str] = []
        self.patches: list[tuple[str, dict[str, Any], str]] = []

    def list_namespaced_pod(self, namespace: str, label_selector: str = "", **_: Any) -> Response:
        if self.lost:
            raise MaxRetryError(None, "/api/v1/pods", "connection refused")
        self.selectors.append(label_selector)
        wanted = dict(part.split("=", 1) for part in label_selector.split(","))
        chosen = [p for p in self.pods if wanted.items() <= p["metadata"]["labels"].items()]
        return Response({"items": chosen})

    def patch_namespaced_pod(self, name: str, namespace: str, body: dict[str, Any], **kwargs: Any) -> None:
        self.patches.append((name, body, kwargs["_content_type"]))
        if self.conflicts:
            self.conflicts -= 1
            raise ApiException(status=409, reason="Conflict")

    def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> Response:
        (pod,) = [p for p in self.pods if p["metadata"]["name"] == name]
        changed = json.loads(json.dumps(pod))  # meanwhile, the Job controller dropped its finalizer
        changed["metadata"]["resourceVersion"] = "8"
        changed["metadata"]["finalizers"] = [builders.RESULTS_FINALIZER]
        return Response(changed)


class StandInCustom:
    def __init__(self, workloads: list[dict[str, Any]]) -> None:
        self.workloads = workloads

    def list_namespaced_custom_object(self, *_: Any, **__: Any) -> Response:
        return Response({"items": self.workloads})


class StandInClusters(WorkerClusters):
    def __init__(self, cores: dict[str, StandInCore]) -> None:
        super().__init__()
        self.cores = cores

    def core(self, name: str) -> Any:
        return self.cores.get(name)

    def __iter__(self) -> Any:
        return iter(sorted(self.cores.items()))


def remote_pod(index: int, generation: int, message: str, finalizers: list[str]) -> dict[str, Any]:
    pod = succeeded(index, message, owner="uid-of-the-copy")
    pod["metadata"]["namespace"] = SEARCH.namespace
    pod["metadata"]["resourceVersion"] = "7"
    pod["metadata"]["finalizers"] = finalizers
    pod["metadata"]["labels"] = names.labels(SEARCH.name, names.COMPONENT_WORKER, generation, 0) | {
        names.LABEL_SEARCH_UID: SEARCH.uid
    }
    return pod


def executor(cores: dict[str, StandInCore], workloads: list[dict[str, Any]]) -> KubernetesExecutor:
    made = KubernetesExecutor.__new__(KubernetesExecutor)
    made.search, made.spec, made.default_image = SEARCH, spec(), None
    made.core, made.custom = StandInCore(), StandInCustom(workloads)  # type: ignore[assignment]
    made.workers = StandInClusters(cores)
    return made


def test_a_round_placed_in_a_worker_cluster_is_read_there() -> None:
    task = TASK.model_copy(update={"generation": 1})
    held = [builders.RESULTS_FINALIZER, "batch.kubernetes.io/job-tracking"]
    worker_a = StandInCore([remote_pod(0, 1, report(0, IDS[0], IDS[1]), held)])
    made = executor({"worker-a": worker_a}, [workload("2026-01-01T00:00:01Z", "worker-a")])
    collected = made._collect_placed(job(), task)
    assert [r.candidate_id for r in collected.shards[0].results] == IDS[:2]
    assert f"{names.LABEL_SEARCH_UID}={SEARCH.uid}" in worker_a.selectors[0]
    assert f"{names.LABEL_GENERATION}=1" in worker_a.selectors[0]


def test_a_lost_or_unknown_worker_cluster_is_named_and_settles_nothing() -> None:
    lost = executor({"worker-a": StandInCore(lost=True)}, [workload("2026-01-01T00:00:01Z", "worker-a")])
    collected = lost._collect_placed(job(), TASK)
    assert collected.shards == {}
    assert collected.workers_pending_reason == CLUSTER_UNREACHABLE
    assert "worker cluster worker-a" in (collected.workers_pending or "")
    unknown = executor({}, [workload("2026-01-01T00:00:01Z", "worker-z")])
    collected = unknown._collect_placed(job(), TASK)
    assert "worker cluster worker-z" in (collected.workers_pending or "")
    assert "no credentials" in (collected.workers_pending or "")


def test_results_are_released_up_to_the_archived_generation_in_every_cluster_that_answers() -> None:
    held = [builders.RESULTS_FINALIZER, "other/keep"]
    worker_a = StandInCore(
        [remote_pod(0, 1, "r", held), remote_pod(1, 2, "r", held), remote_pod(2, 1, "r", [])]
    )
    made = executor({"worker-a": worker_a, "worker-b": StandInCore(lost=True)}, [])
    made.release_results(1)  # worker-b cannot be reached: logged, tried again at the next release
    (patch,) = worker_a.patches
    name, body, content_type = patch
    assert name == worker_a.pods[0]["metadata"]["name"]  # generation 1, held; not generation 2's
    assert body == {"metadata": {"finalizers": ["other/keep"], "resourceVersion": "7"}}
    assert content_type == "application/merge-patch+json"  # a strategic merge would keep the finalizer


def test_worker_cluster_credentials_come_one_kubeconfig_per_file(tmp_path: Path) -> None:
    with pytest.raises(WorkerClustersError, match="is not a directory"):
        WorkerClusters.from_directory(tmp_path / "missing")
    with pytest.raises(WorkerClustersError, match="holds no worker-cluster kubeconfig"):
        WorkerClusters.from_directory(tmp_path)
    (tmp_path / "..data").mkdir()  # what a mounted Secret keeps beside its keys: skipped
    (tmp_path / "worker-a").write_text("not: [a kubeconfig")
    with pytest.raises(WorkerClustersError, match="worker-a: not a usable kubeconfig"):
        WorkerClusters.from_directory(tmp_path)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    (tmp_path / "worker-a").write_text(json.dumps(config))
    (tmp_path / "worker-b").write_text(json.dumps(config))
    clusters = WorkerClusters.from_directory(tmp_path)
    assert sorted(clusters.clients) == ["worker-a", "worker-b"]
    assert clusters.core("worker-a") is not None
    assert clusters.core("worker-c") is None
    clusters.close()


def test_a_release_that_meets_a_concurrent_change_reads_the_pod_again_and_retries() -> None:
    worker_a = StandInCore(
        [remote_pod(0, 1, "r", [builders.RESULTS_FINALIZER, "batch.kubernetes.io/job-tracking"])]
    )
    worker_a.conflicts = 1
    executor({"worker-a": worker_a}, []).release_results(1)
    first, second = worker_a.patches
    assert first[1]["metadata"] == {
        "finalizers": ["batch.kubernetes.io/job-tracking"],
        "resourceVersion": "7",
    }
    # Not the stale list: that would put back the finalizer the Job controller had just removed.
    assert second[1]["metadata"] == {"finalizers": [], "resourceVersion": "8"}
