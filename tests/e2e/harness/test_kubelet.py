"""The harness, not the product: the control plane's garbage collector removes what a deleted owner
owned, and the test kubelet kills the processes of the pods it deleted (so no test leaves a process
running)."""

from __future__ import annotations

from kubernetes import client

from tests.support.kubelet import TestKubelet
from tests.support.pods import python_command, restricted_job
from tests.support.processes import group_is_empty, wait_until


def test_deleting_an_owner_garbage_collects_what_it_owns(
    api_client: client.ApiClient, test_kubelet: TestKubelet, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    batch = client.BatchV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}, "data": {}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "owned", "ownerReferences": [reference]}, "data": {"a": "b"}}
    )
    batch.create_namespaced_job(
        namespace,
        restricted_job(
            {
                "metadata": {"name": "owned-job", "ownerReferences": [reference]},
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "terminationGracePeriodSeconds": 1,
                            "containers": [
                                {
                                    "name": "main",
                                    "image": "ignored",
                                    "command": python_command("import time; time.sleep(600)"),
                                }
                            ],
                        }
                    }
                },
            }
        ),
    )

    def pod_running() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=owned-job").items
        return pods[0] if pods and pods[0].status.phase == "Running" else None

    wait_until(pod_running, timeout=90, what="the owned Job's pod to run")
    process_groups = set(test_kubelet.process_groups())

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def gone() -> bool:
        config_maps = {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}
        jobs = batch.list_namespaced_job(namespace).items
        pods = core.list_namespaced_pod(namespace).items
        return "owned" not in config_maps and not jobs and not pods

    wait_until(gone, timeout=120, what="garbage collection of the owned ConfigMap, Job and pod")
    # The sleeping pod's process was killed when its pod was deleted.
    wait_until(
        lambda: all(group_is_empty(pgid) for pgid in process_groups),
        timeout=30,
        what="the deleted pod's process to exit",
    )
