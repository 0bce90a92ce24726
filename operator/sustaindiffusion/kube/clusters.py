"""The worker clusters MultiKueue may run a search's Jobs in, as the operator reaches them.

MultiKueue copies a worker Job into a worker cluster and mirrors the Job's status back; the worker
pods, whose termination messages carry the results, stay there. The operator reads them with
credentials of its own for each worker cluster: one kubeconfig file per cluster in a directory
(a Secret mounted by the chart), named as the MultiKueueCluster. Those credentials need only
`get`, `list` and `patch` on pods in the searches' namespaces (patch: to release a pod's results
finalizer once its report is archived). Workers themselves still hold no credentials.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a MultiKueueCluster's name: a DNS label


class WorkerClustersError(ValueError):
    """The worker clusters' credentials cannot be read: the message names the file."""


@dataclass
class WorkerClusters:
    clients: dict[str, client.ApiClient] = field(default_factory=dict)

    @classmethod
    def from_directory(cls, directory: Path) -> WorkerClusters:
        """One kubeconfig per file, the file's name the cluster's (hidden files and the links a
        mounted Secret keeps beside its keys are skipped)."""
        if not directory.is_dir():
            raise WorkerClustersError(f"{directory} is not a directory of worker-cluster kubeconfigs")
        clusters = cls()
        for path in sorted(directory.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                clusters.clients[path.name] = config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=str(path)
                )
            except (ConfigException, OSError, ValueError, yaml.YAMLError) as error:
                raise WorkerClustersError(f"{path}: not a usable kubeconfig ({error})") from None
        if not clusters.clients:
            raise WorkerClustersError(f"{directory} holds no worker-cluster kubeconfig")
        return clusters

    def core(self, name: str) -> client.CoreV1Api | None:
        api = self.clients.get(name)
        return client.CoreV1Api(api) if api is not None else None

    def __iter__(self) -> Iterator[tuple[str, client.CoreV1Api]]:
        for name, api in sorted(self.clients.items()):
            yield name, client.CoreV1Api(api)

    def close(self) -> None:
        for api in self.clients.values():
            api.close()  # type: ignore[no-untyped-call]
