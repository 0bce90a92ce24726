"""Helpers for end-to-end tests of the operator: the operator as its own killable process, a small
search spec on the tiny models, and reading a search, its archive and its workers' logs back."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client

from sustaindiffusion.api.keywords import DEFAULT_NEGATIVE_POOL, DEFAULT_POSITIVE_POOL
from sustaindiffusion.api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from sustaindiffusion.kube import names
from sustaindiffusion.kube.builders import ARCHIVE_KEY
from sustaindiffusion.search.records import ArchiveRecord, parse_lines
from tests.support.controlplane import ControlPlane
from tests.support.kubelet import TestKubelet
from tests.support.processes import ManagedProcess, wait_until
from tests.support.slots import free_port
from tests.support.standin_worker import PROGRAM

# A bound on a hang, not a measure: a tiny search of a few generations took over 300 s in a warm
# `make test` on 2 cores with every suite running beside it (and 333 s on a fresh machine).
SEARCH_TIMEOUT = 900


class OperatorProcess:
    """The operator as its own process (python -m sustaindiffusion.operator), killable at will."""

    def __init__(
        self,
        control_plane: ControlPlane,
        namespace: str,
        workdir: Path,
        identity: str | None = None,
        kubeconfig: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.control_plane, self.namespace, self.workdir = control_plane, namespace, workdir
        # One identity across restarts, as a pod keeps its name when its container restarts: the
        # restarted operator renews its own Lease at once instead of waiting for it to expire.
        self.identity = identity or f"operator-{namespace}"
        self.kubeconfig = kubeconfig or control_plane.kubeconfig
        self.extra_args = extra_args
        self.process: ManagedProcess | None = None
        self.metrics_port = self.health_port = 0
        self.starts = 0

    def start(self) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1")
        self.starts += 1
        self.process = ManagedProcess(
            f"{self.identity}-{self.starts}",
            operator_command(
                self.namespace, self.metrics_port, self.health_port, self.identity, self.extra_args
            ),
            self.workdir / f"{self.identity}-{self.starts}.log",
            env=env,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers, as a crashed or evicted operator."""
        if self.process is not None:
            self.process.signal_group(signal.SIGKILL)
            self.process.stop(grace_seconds=5)
            self.process = None

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.workdir.glob(f"{self.identity}-*.log"))
        )


def operator_command(
    namespace: str, metrics_port: int, health_port: int = 0, identity: str = "", extra: tuple[str, ...] = ()
) -> list[str]:
    """The operator watching `namespace`, its Lease in that namespace, on loopback ports."""
    return [
        sys.executable,
        "-m",
        "sustaindiffusion.operator",
        "--namespace",
        namespace,
        "--metrics-port",
        str(metrics_port),
        "--metrics-address",
        "127.0.0.1",
        "--health-port",
        str(health_port),
        "--health-address",
        "127.0.0.1",
        "--lease-namespace",
        namespace,
        "--identity",
        identity or f"operator-{namespace}",
        *extra,
    ]


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
        # One image per candidate: too little evidence for the valid-images constraint to mean much.
        "constraints": {"validImages": {"enabled": False}},
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


def create_search(
    api: client.ApiClient,
    namespace: str,
    name: str,
    spec: dict[str, Any],
    labels: dict[str, str] | None = None,
) -> None:
    metadata: dict[str, Any] = {"name": name} | ({"labels": labels} if labels else {})
    body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def get_search(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    result: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return dict(result)


class SearchFailedError(AssertionError):
    """The search waited for failed: its status says why, and waiting longer changes nothing (a
    wait's `fatal` error)."""


def search_succeeded(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Whether the search has succeeded; raises SearchFailedError, with its status, once it failed."""
    status = get_search(api, namespace, name).get("status") or {}
    if status.get("phase") == "Failed":
        raise SearchFailedError(f"search {name} failed: {json.dumps(status, indent=1)[:3000]}")
    return status.get("phase") == "Succeeded"


def wait_phase(
    api: client.ApiClient, namespace: str, name: str, operator: OperatorProcess, phase: str = "Succeeded"
) -> dict[str, Any]:
    failed: list[str] = []

    def reached() -> bool:
        status = get_search(api, namespace, name).get("status") or {}
        if status.get("phase") == "Failed" and phase != "Failed":
            failed.append(f"search failed: {status.get('message')}")
            return True  # no use waiting longer
        return status.get("phase") == phase

    try:
        wait_until(reached, SEARCH_TIMEOUT, interval=1.0, what=f"search {name} to reach {phase}")
        if failed:
            raise AssertionError(failed[0])
    except (TimeoutError, AssertionError) as error:
        raise AssertionError(
            f"{error}\n--- status ---\n{get_search(api, namespace, name).get('status')}\n"
            f"--- jobs ---\n{_jobs(api, namespace)}\n--- operator log ---\n{operator.log()}"
        ) from None
    return get_search(api, namespace, name)


def _jobs(api: client.ApiClient, namespace: str) -> str:
    """The Jobs of `namespace` and their pods, one line each, for a failure's message."""
    lines = []
    core = client.CoreV1Api(api)
    for job in client.BatchV1Api(api).list_namespaced_job(namespace).items:
        status = job.status
        lines.append(
            f"{job.metadata.name}: active {status.active} succeeded {status.succeeded} "
            f"failed {status.failed} completed {status.completed_indexes!r} "
            f"failedIndexes {status.failed_indexes!r}"
        )
        selector = f"batch.kubernetes.io/controller-uid={job.metadata.uid}"
        for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
            conditions = [c.type for c in pod.status.conditions or [] if c.status == "True"]
            deleting = bool(pod.metadata.deletion_timestamp)
            lines.append(f"  {pod.metadata.name}: {pod.status.phase} {conditions} deleting={deleting}")
    return "\n".join(lines) or "(none)"


def wait_event(
    api: client.ApiClient, namespace: str, matches: Callable[[Any], bool], what: str, timeout: float = 30
) -> None:
    """Wait for an Event of the namespace that `matches`: the operator posts events after the status
    write they accompany, so a test that saw the status may list the events a moment too early."""

    def posted() -> bool:
        return any(matches(event) for event in client.CoreV1Api(api).list_namespaced_event(namespace).items)

    wait_until(posted, timeout, what=what)


def archive_records(api: client.ApiClient, namespace: str, name: str) -> list[ArchiveRecord]:
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


# A search for the stand-in worker (tests/support/standin_worker.py): deterministic synthetic
# metrics in milliseconds, so what is measured or compared is the operator's behaviour.
STANDIN_SPEC: dict[str, Any] = {
    "model": {"id": "stand-in/model"},
    "prompts": {"inline": ["Photo portrait of a Software Engineer that codes"], "imagesPerPrompt": 4},
    "searchSpace": {
        "inferenceSteps": {"min": 10, "max": 40},
        "guidanceScale": {"min": 1.0, "max": 9.0, "step": 0.5},
        "positiveKeywords": {"pool": ["photograph", "gentle", "honest", "film grain"]},
        "negativeKeywords": {"pool": ["ambitious", "lowres", "assertive"]},
        "promptWeight": {"min": 0, "max": 3},
    },
    "algorithm": {"populationSize": 6, "generations": 2, "seed": 5},
    "execution": {
        "candidatesPerPod": 2,
        "parallelism": 3,
        "retriesPerCandidate": 1,
        "maxFailedCandidates": 100,
        "resources": {"requests": {"cpu": "100m"}, "limits": {"nvidia.com/gpu": 1}},
    },
}


def standin_spec(**sections: dict[str, Any]) -> dict[str, Any]:
    """STANDIN_SPEC with `sections` (e.g. algorithm={...}) merged into its top-level sections."""
    spec = copy.deepcopy(STANDIN_SPEC)
    for name, values in sections.items():
        spec[name] = {**spec.get(name, {}), **values}
    return spec


def pod_key(pod: dict[str, Any], namespace: str) -> tuple[int, int, int] | None:
    """(generation, round, shard) of a worker pod of `namespace`, None for any other pod."""
    metadata = pod["metadata"]
    labels = metadata.get("labels") or {}
    if metadata["namespace"] != namespace or names.LABEL_GENERATION not in labels:
        return None
    index = (metadata.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index", "-1")
    return int(labels[names.LABEL_GENERATION]), int(labels.get(names.LABEL_ROUND, "0")), int(index)


@contextlib.contextmanager
def standin_workers(kubelet: TestKubelet, namespace: str) -> Iterator[None]:
    """Worker pods of `namespace` run the stand-in worker instead of the real one."""

    def standin(pod: dict[str, Any], argv: list[str]) -> list[str] | None:
        return [*PROGRAM, *argv[1:]] if pod_key(pod, namespace) is not None else None

    kubelet.programs.append(standin)
    try:
        yield
    finally:
        kubelet.programs.remove(standin)


def run_standin_search(
    api: client.ApiClient,
    kubelet: TestKubelet,
    operator: OperatorProcess,
    namespace: str,
    name: str,
    spec: dict[str, Any],
    faults: Sequence[Callable[[dict[str, Any]], Any]] = (),
) -> dict[str, Any]:
    """Run `spec` to Succeeded with stand-in workers and the kubelet `faults` installed meanwhile."""
    kubelet.faults.extend(faults)
    try:
        with standin_workers(kubelet, namespace):
            create_search(api, namespace, name, spec)
            return wait_phase(api, namespace, name, operator)
    finally:
        for fault in faults:
            kubelet.faults.remove(fault)
