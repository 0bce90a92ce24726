"""Kueue objects the Kueue suites share: the LocalQueue and ClusterQueue of a test namespace, a
search spec that queues through it, and reading a search's conditions and a namespace's Workloads."""

from __future__ import annotations

from typing import Any, cast

import yaml
from kubernetes import client

from tests.support.controlplane import ControlPlane
from tests.support.searches import get_search, standin_spec

KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
LOCAL_QUEUE = "team"


def apply(control_plane: ControlPlane, *documents: dict[str, Any]) -> None:
    control_plane.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(documents))


def cluster_queue(control_plane: ControlPlane, namespace: str, gpus: int) -> dict[str, Any]:
    """A ClusterQueue for `namespace` only, with `gpus` of nvidia.com/gpu quota; preemption of lower
    priorities within it; and the namespace's LocalQueue `team` pointing at it. Returns the manifests."""
    queue = {
        "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
        "kind": "ClusterQueue",
        "metadata": {"name": f"gpus-{namespace}"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "preemption": {"withinClusterQueue": "LowerPriority"},
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "nvidia.com/gpu"],
                    "flavors": [
                        {
                            "name": "gpu",
                            "resources": [
                                {"name": "cpu", "nominalQuota": "16"},
                                {"name": "nvidia.com/gpu", "nominalQuota": gpus},
                            ],
                        }
                    ],
                }
            ],
        },
    }
    local = {
        "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
        "kind": "LocalQueue",
        "metadata": {"name": LOCAL_QUEUE, "namespace": namespace},
        "spec": {"clusterQueue": f"gpus-{namespace}"},
    }
    apply(control_plane, queue, local)
    return {"clusterQueue": queue, "localQueue": local}


def kueue_spec(**execution: Any) -> dict[str, Any]:
    return standin_spec(execution={"queueName": LOCAL_QUEUE, **execution})


def conditions(api: client.ApiClient, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    status = get_search(api, namespace, name).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def workloads(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listing = cast(
        dict[str, Any],
        client.CustomObjectsApi(api).list_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads"
        ),
    )
    return list(listing.get("items") or [])
