"""Kueue objects the Kueue suites share: the LocalQueue and ClusterQueue of a test namespace, a
search spec that queues through it, reading a namespace's Workloads, and a History of what Kueue
and the operator said while searches ran."""

from __future__ import annotations

from typing import Any, cast

import yaml
from kubernetes import client

from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from tests.support.controlplane import ControlPlane
from tests.support.processes import Poller
from tests.support.searches import standin_spec

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


def workloads(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listing = cast(
        dict[str, Any],
        client.CustomObjectsApi(api).list_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads"
        ),
    )
    return list(listing.get("items") or [])


class History(Poller):
    """What Kueue and the operator said while searches ran: the Workloads' conditions and each
    search's Queued condition, polled in the background (Workloads go with their Jobs when a
    generation is released)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.workloads: dict[str, dict[str, Any]] = {}  # name: the last seen
        self.reserved: set[str] = set()  # Workloads seen holding quota
        self.evicted: dict[str, str] = {}  # Workload name: eviction message
        self.admitted_pods: set[tuple[int, int]] = set()  # (pods asked for, pods Kueue admitted)
        self.queued: dict[str, list[tuple[str, str]]] = {}  # search: (reason, message) while Queued
        self.states: dict[str, set[tuple[str, str]]] = {}  # search: (status, reason) of Queued
        super().__init__(self._poll, interval=0.3)  # a poll that fails is taken again

    def _poll(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        for workload in workloads(self.api, self.namespace):
            name = workload["metadata"]["name"]
            self.workloads[name] = workload
            asked = {p["name"]: int(p.get("count") or 0) for p in workload["spec"].get("podSets") or []}
            admission = (workload.get("status") or {}).get("admission") or {}
            for pod_set in admission.get("podSetAssignments") or []:
                admitted = int(pod_set.get("count") or 0)
                self.admitted_pods.add((asked.get(pod_set["name"], admitted), admitted))
            for condition in (workload.get("status") or {}).get("conditions") or []:
                if condition["type"] == "QuotaReserved" and condition["status"] == "True":
                    self.reserved.add(name)
                if condition["type"] == "Evicted" and condition["status"] == "True":
                    self.evicted[name] = condition.get("message", "")
        listing = cast(
            dict[str, Any],
            custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL),
        )
        for search in listing.get("items") or []:
            for condition in (search.get("status") or {}).get("conditions") or []:
                if condition["type"] == "Queued":
                    states = self.states.setdefault(search["metadata"]["name"], set())
                    states.add((condition["status"], condition["reason"]))
                if condition["type"] == "Queued" and condition["status"] == "True":
                    seen = self.queued.setdefault(search["metadata"]["name"], [])
                    said = (condition["reason"], condition.get("message", ""))
                    if said not in seen:
                        seen.append(said)
