"""The pure parts of a search's cluster objects: names, the Job and ConfigMap builders, the archive's
chunks."""

from __future__ import annotations

from typing import Any

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.contract import EXIT_PERMANENT, TERMINATION_MESSAGE_ENV, worker_command
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate
from sustaindiffusion.kube import builders, names
from sustaindiffusion.kube.archive import CHUNK_BYTES, append_lines
from sustaindiffusion.kube.classify import parse_indexes
from sustaindiffusion.search.records import ArchiveRecord, parse_lines
from tests.support.fake_evaluator import fake_metrics
from tests.support.tasks import task_of

SEARCH = builders.SearchRef("my-search", "team-a", "0000-uid")


def spec(**execution: Any) -> SustainSearchSpec:
    return SustainSearchSpec.model_validate(
        {
            "prompts": {"inline": ["a portrait"]},
            "model": {"tokenSecretRef": {"name": "hf"}, "cache": {"claimName": "weights"}},
            "execution": {
                "queueName": "gpu-queue",
                "workloadPriorityClass": "low",
                "priorityClassName": "batch",
                "schedulerName": "custom-scheduler",
                "nodeSelector": {"nvidia.com/gpu.product": "H100"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {}},
                "resources": {"requests": {"cpu": 4, "memory": "32Gi"}, "limits": {"nvidia.com/gpu": 1}},
                "parallelism": 8,
                "retriesPerCandidate": 2,
                "artifacts": {"claimName": "results"},
                **execution,
            },
        }
    )


def test_a_follow_up_round_has_its_own_names_and_retry_budget() -> None:
    task = task_of(spec(), generation=4, shards=2, round=1, retries=0)
    job = builders.worker_job(SEARCH, spec(), task)
    assert job["metadata"]["name"] == "my-search-g0004-r1"
    assert job["metadata"]["labels"][names.LABEL_ROUND] == "1"
    assert job["spec"]["template"]["metadata"]["labels"][names.LABEL_ROUND] == "1"
    assert job["spec"]["backoffLimitPerIndex"] == 0
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["task"]["configMap"]["name"] == "my-search-g0004-r1-task"
    assert builders.task_config_map(SEARCH, task)["metadata"]["name"] == "my-search-g0004-r1-task"


def test_names_are_deterministic_and_valid_dns_labels() -> None:
    assert names.job_name("s", 3) == "s-g0003"
    assert names.task_config_map_name("s", 3) == "s-g0003-task"
    assert names.archive_config_map_name("s", 12) == "s-archive-00012"
    long = "a" * 200
    for name in (
        names.job_name(long, 1),
        names.task_config_map_name(long, 1),
        names.archive_config_map_name(long, 1),
    ):
        assert len(name) <= 63
        assert name[0].isalnum()
        assert name[-1].isalnum()
    assert names.job_name(long, 1) != names.job_name("a" * 199, 1)
    assert len(names.search_label(long)) <= 63


def test_job_carries_the_spec_kueue_labels_and_owner() -> None:
    job = builders.worker_job(SEARCH, spec(), task_of(spec(), generation=4, shards=5))
    metadata, job_spec = job["metadata"], job["spec"]
    assert metadata["name"] == "my-search-g0004"
    assert metadata["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert metadata["labels"]["kueue.x-k8s.io/priority-class"] == "low"
    assert metadata["annotations"]["kueue.x-k8s.io/job-min-parallelism"] == "1"  # partial admission
    assert metadata["labels"][names.LABEL_GENERATION] == "4"
    owner = metadata["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("SustainSearch", "my-search", "0000-uid")
    assert "blockOwnerDeletion" not in owner
    assert job_spec["completionMode"] == "Indexed"
    assert job_spec["completions"] == 5
    assert job_spec["parallelism"] == 5  # never more pods than shards
    assert job_spec["backoffLimitPerIndex"] == 2
    assert "suspend" not in job_spec  # Kueue owns suspension; the operator never writes it
    rules = job_spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailIndex"
    assert rules[0]["onExitCodes"]["values"] == [EXIT_PERMANENT]
    pod = job_spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["priorityClassName"] == "batch"
    assert pod["schedulerName"] == "custom-scheduler"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["affinity"] == {"nodeAffinity": {}}
    assert pod["activeDeadlineSeconds"] == 3600
    container = pod["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "32Gi"},
        "limits": {"nvidia.com/gpu": "1"},
    }
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert {"/tmp", builders.CACHE_MOUNT, "/models", "/artifacts"} == writable  # and nothing else
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    assert env["HF_HOME"]["value"] == "/models"
    assert env[TERMINATION_MESSAGE_ENV]["value"] == container["terminationMessagePath"]
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    command = container["command"]
    assert command == worker_command(
        "/etc/sustaindiffusion/task/task.json",
        metrics_port=builders.METRICS_PORT,
        metrics_address="$(POD_IP)",  # live metrics on the pod's own address
        artifacts="/artifacts/my-search",
    )
    claims = {v["name"]: v for v in pod["volumes"]}
    assert claims["weights"]["persistentVolumeClaim"]["claimName"] == "weights"
    assert claims["task"]["configMap"]["name"] == "my-search-g0004-task"


def test_the_install_worker_image_replaces_only_the_default() -> None:
    plain = SustainSearchSpec.model_validate({"prompts": {"inline": ["p"]}})
    job = builders.worker_job(SEARCH, plain, task_of(plain), default_image="registry.internal/sd/worker:1")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.internal/sd/worker:1"
    chosen = SustainSearchSpec.model_validate(
        {"prompts": {"inline": ["p"]}, "execution": {"image": "mine:2"}}
    )
    job = builders.worker_job(SEARCH, chosen, task_of(chosen), default_image="registry.internal/sd/worker:1")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:2"


def test_optional_pod_fields_are_left_out_when_unset() -> None:
    plain = SustainSearchSpec.model_validate({"prompts": {"inline": ["p"]}})
    pod = builders.worker_job(SEARCH, plain, task_of(plain))["spec"]["template"]["spec"]
    for absent in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "schedulerName"):
        assert absent not in pod
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["HF_HOME"] == f"{builders.CACHE_MOUNT}/huggingface"  # no weights cache: the pod's emptyDir
    assert env["HOME"] == env["XDG_CACHE_HOME"] == builders.CACHE_MOUNT
    plain_metadata = builders.worker_job(SEARCH, plain, task_of(plain))["metadata"]
    assert "kueue.x-k8s.io/queue-name" not in plain_metadata["labels"]
    assert "annotations" not in plain_metadata


def test_task_config_map_round_trips_the_task() -> None:
    task = EvaluationTask(
        search="my-search",
        generation=2,
        model=spec().model,
        prompts=["a"],
        images_per_prompt=3,
        candidates=[TaskCandidate(candidate_id="c1", settings=CandidateSettings(inference_steps=30))],
        candidates_per_shard=1,
    )
    config_map = builders.task_config_map(SEARCH, task)
    assert config_map["metadata"]["name"] == "my-search-g0002-task"
    assert EvaluationTask.model_validate_json(config_map["data"][builders.TASK_KEY]) == task


def test_archive_chunks_stay_bounded_and_keep_every_record_exactly() -> None:
    records = [
        ArchiveRecord(
            generation=i // 10, result=EvaluationResult.succeeded(f"{i:016x}", fake_metrics(_settings(i)))
        )
        for i in range(4000)
    ]
    records.append(
        ArchiveRecord(
            generation=300, result=EvaluationResult.failed("f" * 16, "shard 1: worker exited with code 137")
        )
    )
    chunks, remaining = [], records
    while remaining:
        text, remaining = append_lines("", remaining)
        chunks.append(text)
    assert len(chunks) > 1
    assert all(len(c.encode()) <= CHUNK_BYTES for c in chunks)
    parsed = [r for chunk in chunks for r in parse_lines(chunk)]
    assert parsed == records  # every field, floats exactly


def _settings(i: int) -> CandidateSettings:
    return CandidateSettings(inference_steps=25 + i % 50, guidance_scale=float(i % 20))


def test_job_index_sets_are_parsed() -> None:
    assert parse_indexes("1,3-5,9") == [1, 3, 4, 5, 9]
    assert parse_indexes("") == []
    assert parse_indexes(None) == []
