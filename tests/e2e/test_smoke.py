"""Smoke tests proving the test environment is a real Kubernetes control plane: the real API server
validates, the real scheduler binds, the real Job controller and garbage collector act, and the
test kubelet runs pods as local processes."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.controlplane import ControlPlane
from tests.support.kubelet import TestKubelet
from tests.support.pods import python_command, restricted, restricted_job
from tests.support.processes import wait_until

GROUP = "smoke.sustaindiffusion.io"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                    "low": {"type": "integer"},
                                    "high": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "!has(self.low) || !has(self.high) || self.low <= self.high",
                                        "message": "low must not exceed high",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def _wait_job_condition(
    batch: client.BatchV1Api, name: str, namespace: str, kind: str, timeout: float = 120
) -> client.V1Job:
    def done() -> client.V1Job | None:
        job = batch.read_namespaced_job_status(name, namespace)
        for condition in job.status.conditions or []:
            if condition.type == kind and condition.status == "True":
                return job
        return None

    wait_until(done, timeout=timeout, what=f"Job {namespace}/{name} condition {kind}")
    return batch.read_namespaced_job_status(name, namespace)


def test_crd_schema_and_cel_rules_are_enforced_by_the_api_server(
    api_client: client.ApiClient, namespace: str
) -> None:
    extensions = client.ApiextensionsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    try:
        extensions.create_custom_resource_definition(WIDGET_CRD)
    except ApiException as error:
        if error.status != 409:
            raise

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(f"widgets.{GROUP}")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_until(established, timeout=60, what="Widget CRD established")

    def create(spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/v1",
            "kind": "Widget",
            "metadata": {"generateName": "w-"},
            "spec": spec,
        }
        # Discovery of a new CRD can lag its Established condition by a moment.
        for _ in range(50):
            try:
                return cast(
                    dict[str, Any],
                    custom.create_namespaced_custom_object(GROUP, "v1", namespace, "widgets", body),
                )
            except ApiException as error:
                if error.status != 404:
                    raise
                time.sleep(0.2)
        raise AssertionError("widgets resource never became available")

    assert create({"size": 3})["spec"]["size"] == 3

    with pytest.raises(ApiException) as too_big:
        create({"size": 11})
    assert too_big.value.status == 422
    assert "spec.size" in too_big.value.body
    assert "should be less than or equal to 10" in too_big.value.body

    with pytest.raises(ApiException) as crossed:
        create({"size": 1, "low": 5, "high": 2})
    assert crossed.value.status == 422
    assert "low must not exceed high" in crossed.value.body


def test_indexed_job_runs_on_the_fake_node_and_reports_termination_messages(
    api_client: client.ApiClient, test_kubelet: TestKubelet, namespace: str
) -> None:
    batch = client.BatchV1Api(api_client)
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "greeting"}, "data": {"word": "hello", "file.txt": "from a volume"}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "token"}, "stringData": {"value": "s3cret"}}
    )
    code = (
        "import json, os, sys, pathlib;"
        "msg = {'index': int(os.environ['JOB_COMPLETION_INDEX']), 'word': os.environ['WORD'],"
        " 'secret': os.environ['SECRET'], 'pod': os.environ['POD_NAME'],"
        " 'volume': pathlib.Path(sys.argv[1], 'file.txt').read_text()};"
        "pathlib.Path(os.environ['MESSAGE_PATH']).write_text(json.dumps(msg))"
    )
    job = {
        "metadata": {"name": "indexed"},
        "spec": {
            "completions": 3,
            "parallelism": 3,
            "completionMode": "Indexed",
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "main",
                            "image": "ignored.example/worker:test",
                            "command": [*python_command(code), "/etc/greeting"],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                            "env": [
                                {"name": "MESSAGE_PATH", "value": "/dev/termination-log"},
                                {
                                    "name": "WORD",
                                    "valueFrom": {"configMapKeyRef": {"name": "greeting", "key": "word"}},
                                },
                                {
                                    "name": "SECRET",
                                    "valueFrom": {"secretKeyRef": {"name": "token", "key": "value"}},
                                },
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                            ],
                            "volumeMounts": [{"name": "greeting", "mountPath": "/etc/greeting"}],
                        }
                    ],
                    "volumes": [{"name": "greeting", "configMap": {"name": "greeting"}}],
                }
            },
        },
    }
    batch.create_namespaced_job(namespace, restricted_job(job))
    _wait_job_condition(batch, "indexed", namespace, "Complete")

    pods = core.list_namespaced_pod(namespace, label_selector="job-name=indexed").items
    messages = []
    for pod in pods:
        assert pod.spec.node_name == test_kubelet.node_name  # bound by the real scheduler
        assert pod.status.phase == "Succeeded"
        terminated = pod.status.container_statuses[0].state.terminated
        messages.append(json.loads(terminated.message) | {"expected_pod": pod.metadata.name})
    assert sorted(m["index"] for m in messages) == [0, 1, 2]
    for message in messages:
        assert message["word"] == "hello"
        assert message["secret"] == "s3cret"
        assert message["volume"] == "from a volume"
        assert message["pod"] == message["expected_pod"]


def test_failing_pods_are_retried_up_to_the_backoff_limit(
    api_client: client.ApiClient, test_kubelet: TestKubelet, namespace: str
) -> None:
    batch = client.BatchV1Api(api_client)
    core = client.CoreV1Api(api_client)
    job = {
        "metadata": {"name": "failing"},
        "spec": {
            "backoffLimit": 2,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "ignored",
                            "command": python_command("import sys; print('boom: out of luck'); sys.exit(3)"),
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }
                    ],
                }
            },
        },
    }
    batch.create_namespaced_job(namespace, restricted_job(job))
    failed_job = _wait_job_condition(batch, "failing", namespace, "Failed", timeout=180)
    assert any(c.reason == "BackoffLimitExceeded" for c in failed_job.status.conditions)
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=failing").items
    assert len(pods) == 3  # the first try and two retries
    for pod in pods:
        terminated = pod.status.container_statuses[0].state.terminated
        assert pod.status.phase == "Failed"
        assert terminated.exit_code == 3
        assert "boom: out of luck" in terminated.message  # the log tail, as FallbackToLogsOnError says


def test_control_plane_listens_on_loopback_only(control_plane: ControlPlane) -> None:
    assert control_plane.server.startswith("https://127.0.0.1:")
    version = control_plane.kubectl("version", "-o", "json").stdout
    server_version = json.loads(version)["serverVersion"]["gitVersion"]
    assert server_version.startswith("v1.")
    for pid in control_plane.pids():
        listening = _listening_addresses(pid)
        assert listening, f"process {pid} listens on nothing"
        assert all(address.startswith("127.0.0.1:") for address in listening), listening


def _listening_addresses(pid: int) -> list[str]:
    """TCP listen addresses of one process, from /proc (no external tools needed)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    addresses = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state != "0A" or inode not in inodes:  # 0A = LISTEN
                    continue
                host_hex, port_hex = local.split(":")
                if table == "tcp":
                    host = socket.inet_ntoa(struct.pack("<I", int(host_hex, 16)))
                else:
                    raw = bytes.fromhex(host_hex)
                    host = socket.inet_ntop(
                        socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    )
                addresses.append(f"{host}:{int(port_hex, 16)}")
    return addresses


def _bare_pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    pod_spec = {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "ignored", "command": command}],
        **spec,
    }
    return {"metadata": {"name": name}, "spec": restricted(pod_spec)}


def _wait_pod_phase(core: client.CoreV1Api, name: str, namespace: str, phase: str) -> client.V1Pod:
    wait_until(
        lambda: core.read_namespaced_pod(name, namespace).status.phase == phase,
        timeout=60,
        what=f"pod {namespace}/{name} phase {phase}",
    )
    return core.read_namespaced_pod(name, namespace)


def test_test_kubelet_restarts_on_failure_and_enforces_active_deadlines(
    api_client: client.ApiClient, test_kubelet: TestKubelet, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    # Fails on its first run, succeeds on the second: the marker lives in an emptyDir volume.
    flaky = (
        "import pathlib, sys; marker = pathlib.Path(sys.argv[1], 'ran-once');"
        "sys.exit(0) if marker.exists() else (marker.touch(), sys.exit(1))"
    )
    pod = _bare_pod("flaky", [*python_command(flaky), "/scratch"], restartPolicy="OnFailure")
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    pod["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    core.create_namespaced_pod(namespace, pod)
    succeeded = _wait_pod_phase(core, "flaky", namespace, "Succeeded")
    assert succeeded.status.container_statuses[0].restart_count == 1

    core.create_namespaced_pod(
        namespace,
        _bare_pod(
            "slow",
            python_command("import time; time.sleep(600)"),
            restartPolicy="Never",
            activeDeadlineSeconds=1,
        ),
    )
    failed = _wait_pod_phase(core, "slow", namespace, "Failed")
    assert failed.status.reason == "DeadlineExceeded"
