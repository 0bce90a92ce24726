"""The operator's pure parts: names, the Job and ConfigMap builders, the archive format, and the
status, which must stay small at 10,000 evaluations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.status import Phase
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate
from sustaindiffusion.operator import builders, names
from sustaindiffusion.operator.archive import CHUNK_BYTES, ArchiveRecord, append_lines, parse_chunk
from sustaindiffusion.operator.driver import _parse_indexes
from sustaindiffusion.operator.engine.search import SearchEngine
from sustaindiffusion.operator.status import (
    ConditionUpdate,
    Observation,
    build_status,
    cap_front,
    merge_conditions,
)
from tests.support.fake_evaluator import fake_metrics
from tests.unit.test_engine import run

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
    job = builders.worker_job(SEARCH, spec(), generation=4, shards=5)
    metadata, job_spec = job["metadata"], job["spec"]
    assert metadata["name"] == "my-search-g0004"
    assert metadata["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert metadata["labels"]["kueue.x-k8s.io/priority-class"] == "low"
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
    assert rules[0]["onExitCodes"]["values"] == [builders.EXIT_PERMANENT]
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
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    assert env["HF_HOME"]["value"] == "/models"
    assert env["SUSTAINDIFFUSION_TERMINATION_MESSAGE_PATH"]["value"] == container["terminationMessagePath"]
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "$(POD_IP)" in container["command"]  # live metrics on the pod's own address
    assert container["command"][-2:] == ["--artifacts", "/artifacts/my-search"]
    claims = {v["name"]: v for v in pod["volumes"]}
    assert claims["weights"]["persistentVolumeClaim"]["claimName"] == "weights"
    assert claims["task"]["configMap"]["name"] == "my-search-g0004-task"


def test_the_install_worker_image_replaces_only_the_default() -> None:
    plain = SustainSearchSpec.model_validate({"prompts": {"inline": ["p"]}})
    job = builders.worker_job(SEARCH, plain, 0, 1, default_image="registry.internal/sd/worker:1")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.internal/sd/worker:1"
    chosen = SustainSearchSpec.model_validate(
        {"prompts": {"inline": ["p"]}, "execution": {"image": "mine:2"}}
    )
    job = builders.worker_job(SEARCH, chosen, 0, 1, default_image="registry.internal/sd/worker:1")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:2"


def test_optional_pod_fields_are_left_out_when_unset() -> None:
    plain = SustainSearchSpec.model_validate({"prompts": {"inline": ["p"]}})
    pod = builders.worker_job(SEARCH, plain, 0, 1)["spec"]["template"]["spec"]
    for absent in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "schedulerName"):
        assert absent not in pod
    labels = builders.worker_job(SEARCH, plain, 0, 1)["metadata"]["labels"]
    assert "kueue.x-k8s.io/queue-name" not in labels


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


def test_archive_records_round_trip_and_chunks_stay_bounded() -> None:
    records = [
        ArchiveRecord(i // 10, EvaluationResult.succeeded(f"{i:016x}", fake_metrics(_settings(i))))
        for i in range(4000)
    ]
    records.append(
        ArchiveRecord(300, EvaluationResult.failed("f" * 16, "shard 1: worker exited with code 137"))
    )
    chunks, remaining = [], records
    while remaining:
        text, remaining = append_lines("", remaining)
        chunks.append(text)
    assert len(chunks) > 1
    assert all(len(c.encode()) <= CHUNK_BYTES for c in chunks)
    parsed = [r for chunk in chunks for r in parse_chunk(chunk)]
    assert [r.result.candidate_id for r in parsed] == [r.result.candidate_id for r in records]
    assert parsed[-1].result.reason == "shard 1: worker exited with code 137"
    assert parsed[5].result.metrics is not None
    assert parsed[5].result.metrics.quality == pytest.approx(records[5].result.metrics.quality, rel=1e-5)


def _settings(i: int) -> CandidateSettings:
    return CandidateSettings(inference_steps=25 + i % 50, guidance_scale=float(i % 20))


def test_job_index_sets_are_parsed() -> None:
    assert _parse_indexes("1,3-5,9") == [1, 3, 4, 5, 9]
    assert _parse_indexes("") == []
    assert _parse_indexes(None) == []


def test_status_stays_under_64_kib_with_10000_evaluations() -> None:
    spec_10k = SustainSearchSpec.model_validate(
        {
            "prompts": {"inline": ["a portrait"]},
            "algorithm": {
                "populationSize": 64,
                "generations": 400,
                "seed": 3,
                "termination": {"maxEvaluations": 10_001},
            },
            "objectives": [
                {"name": "GenderBias"},
                {"name": "EthnicBias"},
                {"name": "Energy"},
                {"name": "Quality"},
            ],
        }
    )
    engine = SearchEngine(spec_10k)
    run(engine)
    assert engine.evaluations >= 9_900
    observation = Observation(
        phase=Phase.SUCCEEDED,
        observed_generation=1,
        running=0,
        conditions=[ConditionUpdate("Complete", True, "SearchFinished", "done")],
    )
    status = build_status(engine, observation, [], spec_10k.reporting.max_front_entries)
    size = len(json.dumps(status.model_dump(mode="json", by_alias=True, exclude_none=True)).encode())
    assert len(status.front or []) <= 50
    assert status.front_size is not None
    assert status.front_size >= len(status.front or [])
    assert size < 64 * 1024, f"status is {size} bytes"


def test_front_cap_keeps_the_extremes() -> None:
    engine = SearchEngine(
        SustainSearchSpec.model_validate(
            {"prompts": {"inline": ["p"]}, "algorithm": {"populationSize": 32, "generations": 6, "seed": 1}}
        )
    )
    run(engine)
    front = engine.front()
    capped = cap_front(front, 3)
    first = [next(iter(p.objectives.values())) for p in front]
    assert len(capped) == min(3, len(front))
    assert next(iter(capped[0].objectives.values())) == min(first)
    assert next(iter(capped[-1].objectives.values())) == max(first)


def test_conditions_keep_their_transition_time_until_they_change() -> None:
    before = [
        {
            "type": "Queued",
            "status": "True",
            "reason": "JobSuspended",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ]
    same = merge_conditions(before, [ConditionUpdate("Queued", True, "JobSuspended")], 3)
    assert same[0].last_transition_time == "2026-01-01T00:00:00Z"
    assert same[0].observed_generation == 3
    changed = merge_conditions(before, [ConditionUpdate("Queued", False, "Admitted")], 3)
    assert changed[0].last_transition_time != "2026-01-01T00:00:00Z"
