"""Pure construction of the Kubernetes objects of a search: the task ConfigMap and the Indexed Job
of each generation, and the archive's ConfigMap chunks. No API calls here; the executor and the
archive create what these return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sustaindiffusion.api.contract import (
    EXIT_PERMANENT,
    TERMINATION_MESSAGE_ENV,
    TERMINATION_MESSAGE_PATH,
    worker_command,
)
from sustaindiffusion.api.resource import API_VERSION, GROUP, KIND
from sustaindiffusion.api.spec import DEFAULT_WORKER_IMAGE, ExecutionSpec, SustainSearchSpec
from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.kube.names import (
    COMPONENT_ARCHIVE,
    COMPONENT_TASK,
    COMPONENT_WORKER,
    KUEUE_MIN_PARALLELISM_ANNOTATION,
    KUEUE_PRIORITY_LABEL,
    KUEUE_QUEUE_LABEL,
    LABEL_SEARCH_UID,
    archive_config_map_name,
    job_name,
    labels,
    task_config_map_name,
)

TASK_KEY = "task.json"
ARCHIVE_KEY = "records.jsonl"
TASK_MOUNT = "/etc/sustaindiffusion/task"
CACHE_MOUNT = "/var/cache/sustaindiffusion"  # an emptyDir: the root filesystem is read-only
WORKER_CONTAINER = "worker"
# Where a Job may run in another cluster (MultiKueue copies the Job, and nothing it refers to), the
# task travels in the pod template: an annotation, mounted as TASK_KEY through the downward API.
TASK_ANNOTATION = f"{GROUP}/task"
# ...and its pods carry a finalizer until the operator has read their termination messages:
# MultiKueue deletes the worker cluster's Job (and so its pods) once it has mirrored its status.
RESULTS_FINALIZER = f"{GROUP}/results"
MAX_INLINE_TASK_BYTES = 200 * 1024  # all of an object's annotations together: 256 KiB
WORKER_UID = 1000
METRICS_PORT = 9400

Manifest = dict[str, Any]


@dataclass(frozen=True)
class SearchRef:
    """The owning SustainSearch, as owner references need it."""

    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> Manifest:
        # Not a controller reference with blockOwnerDeletion: deleting a search never waits on us.
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
        }


def task_config_map(search: SearchRef, task: EvaluationTask) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": task_config_map_name(search.name, task.generation, task.round),
            "namespace": search.namespace,
            "labels": labels(search.name, COMPONENT_TASK, task.generation, task.round),
            "ownerReferences": [search.owner_reference()],
        },
        "data": {TASK_KEY: task.model_dump_json(by_alias=True)},
    }


def worker_container_security() -> Manifest:
    """The `restricted` Pod Security Standard and a read-only root: what every container made for a
    search runs with (its workers, and the audit's claim reader)."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "readOnlyRootFilesystem": True,
    }


def worker_placement(execution: ExecutionSpec) -> Manifest:
    """Where the search's pods may run: its node selector, tolerations and affinity (None: unset)."""
    tolerations = [
        t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in execution.tolerations or []
    ]
    return {
        "nodeSelector": execution.node_selector,
        "tolerations": tolerations or None,
        "affinity": execution.affinity,
    }


def worker_pod_security() -> Manifest:
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def worker_image(spec: SustainSearchSpec, install_default: str | None) -> str:
    """The spec's image, or the install's worker image (Helm value worker.image) where the spec
    kept the CRD's default: platform teams set their registry once."""
    image = spec.execution.image
    return install_default if install_default and image == DEFAULT_WORKER_IMAGE else image


def worker_job(
    search: SearchRef,
    spec: SustainSearchSpec,
    task: EvaluationTask,
    default_image: str | None = None,
    portable: bool = False,
) -> Manifest:
    """The Indexed Job of one round of a generation: one completion per shard of the task.

    `portable`: for an operator whose Jobs MultiKueue may run in worker clusters, the Job refers to
    nothing else in this cluster (the task is in the pod template, not a ConfigMap) and its pods
    keep their results until the operator releases them (`RESULTS_FINALIZER`)."""
    execution = spec.execution
    generation, shards = task.generation, task.shard_count
    job_labels = labels(search.name, COMPONENT_WORKER, generation, task.round)
    if execution.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = execution.queue_name
    if execution.workload_priority_class:
        job_labels[KUEUE_PRIORITY_LABEL] = execution.workload_priority_class
    pod_labels = labels(search.name, COMPONENT_WORKER, generation, task.round)
    if portable:
        pod_labels[LABEL_SEARCH_UID] = search.uid
    metadata: Manifest = {
        "name": job_name(search.name, generation, task.round),
        "namespace": search.namespace,
        "labels": job_labels,
        "ownerReferences": [search.owner_reference()],
    }
    parallelism = min(execution.parallelism, shards)
    if execution.queue_name and parallelism > 1:
        # Shards are independent: Kueue may admit fewer pods at once than `parallelism` asks for
        # (partial admission) rather than hold the whole generation back until all fit. Kueue
        # wants the minimum below the parallelism.
        metadata["annotations"] = {KUEUE_MIN_PARALLELISM_ANNOTATION: "1"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": shards,
            "parallelism": parallelism,
            "backoffLimitPerIndex": task.retries,
            "maxFailedIndexes": shards,  # a failed shard is recorded; the generation goes on
            "podFailurePolicy": {
                "rules": [
                    # The worker says the task cannot succeed as written: retrying will not help.
                    {
                        "action": "FailIndex",
                        "onExitCodes": {
                            "containerName": WORKER_CONTAINER,
                            "operator": "In",
                            "values": [EXIT_PERMANENT],
                        },
                    },
                    # Preemption and node drains are not the shard's fault: retry without counting.
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": _pod_metadata(pod_labels, task, portable),
                "spec": _pod_spec(search, spec, task, worker_image(spec, default_image), portable),
            },
        },
    }


def _pod_metadata(pod_labels: dict[str, str], task: EvaluationTask, portable: bool) -> Manifest:
    if not portable:
        return {"labels": pod_labels}
    text = task.model_dump_json(by_alias=True)
    if len(text.encode()) > MAX_INLINE_TASK_BYTES:
        raise ValueError(
            f"the task of generation {task.generation} is {len(text.encode())} bytes: more than a pod "
            f"annotation holds ({MAX_INLINE_TASK_BYTES}) for a Job that may run in another cluster; "
            "use fewer prompts or candidates per pod"
        )
    return {"labels": pod_labels, "annotations": {TASK_ANNOTATION: text}, "finalizers": [RESULTS_FINALIZER]}


def _task_volume(search: SearchRef, task: EvaluationTask, portable: bool) -> Manifest:
    if portable:
        path = f"metadata.annotations['{TASK_ANNOTATION}']"
        return {
            "name": "task",
            "downwardAPI": {"items": [{"path": TASK_KEY, "fieldRef": {"fieldPath": path}}]},
        }
    return {
        "name": "task",
        "configMap": {"name": task_config_map_name(search.name, task.generation, task.round)},
    }


def _pod_spec(
    search: SearchRef, spec: SustainSearchSpec, task: EvaluationTask, image: str, portable: bool = False
) -> Manifest:
    execution = spec.execution
    artifacts = execution.artifacts
    command = worker_command(
        f"{TASK_MOUNT}/{TASK_KEY}",
        metrics_port=METRICS_PORT,
        metrics_address="$(POD_IP)",
        artifacts=f"{artifacts.path}/{search.name}" if artifacts is not None else None,
    )
    env: list[Manifest] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": TERMINATION_MESSAGE_ENV, "value": TERMINATION_MESSAGE_PATH},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
    ]
    volumes: list[Manifest] = [
        _task_volume(search, task, portable),
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
    ]
    mounts: list[Manifest] = [
        {"name": "task", "mountPath": TASK_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": CACHE_MOUNT},
    ]
    # The root filesystem is read-only: home, library caches and (without a weights cache) the
    # hub's downloads go to the pod's own emptyDir.
    env += [
        {"name": "HOME", "value": CACHE_MOUNT},
        {"name": "XDG_CACHE_HOME", "value": CACHE_MOUNT},
        {"name": "MPLCONFIGDIR", "value": f"{CACHE_MOUNT}/matplotlib"},
        {"name": "TRITON_CACHE_DIR", "value": f"{CACHE_MOUNT}/triton"},
    ]
    model = spec.model
    if model.token_secret_ref is not None:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": model.token_secret_ref.name, "key": model.token_secret_ref.key}
                },
            }
        )
    if model.cache is not None:
        volumes.append(
            {
                "name": "weights",
                "persistentVolumeClaim": {
                    "claimName": model.cache.claim_name,
                    "readOnly": model.cache.read_only,
                },
            }
        )
        mounts.append(
            {"name": "weights", "mountPath": model.cache.mount_path, "readOnly": model.cache.read_only}
        )
    env.append(
        {"name": "HF_HOME", "value": model.cache.mount_path if model.cache else f"{CACHE_MOUNT}/huggingface"}
    )
    if artifacts is not None:
        volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": artifacts.claim_name}})
        mounts.append({"name": "artifacts", "mountPath": artifacts.path})
    # Quantities as strings, as the API (and the client's models) expect them.
    resources = {
        kind: {name: str(value) for name, value in values.items()}
        for kind, values in execution.resources.model_dump(mode="json", exclude_none=True).items()
    }
    container: Manifest = {
        "name": WORKER_CONTAINER,
        "image": image,
        "imagePullPolicy": execution.image_pull_policy,
        "command": command,
        "env": env,
        "resources": resources,
        "volumeMounts": mounts,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": worker_container_security(),
    }
    pod: Manifest = {
        "restartPolicy": "Never",  # required by backoffLimitPerIndex and podFailurePolicy
        "automountServiceAccountToken": False,  # results leave through the termination message only
        "enableServiceLinks": False,
        "activeDeadlineSeconds": execution.pod_deadline_seconds,
        "securityContext": worker_pod_security(),
        "containers": [container],
        "volumes": volumes,
    }
    optional = {
        **worker_placement(execution),
        "priorityClassName": execution.priority_class_name,
        "schedulerName": execution.scheduler_name,
    }
    pod.update({key: value for key, value in optional.items() if value})
    return pod


def archive_config_map(search: SearchRef, index: int, text: str) -> Manifest:
    """Chunk `index` of the search's evaluation archive (JSON lines of `search.records`)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": archive_config_map_name(search.name, index),
            "namespace": search.namespace,
            "labels": labels(search.name, COMPONENT_ARCHIVE),
            "ownerReferences": [search.owner_reference()],
        },
        "data": {ARCHIVE_KEY: text},
    }
