"""Reading a search from a cluster for reports: its spec and archive, replayed into an engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.kube.archive import read_records
from sustaindiffusion.kube.builders import SearchRef
from sustaindiffusion.search.engine import SearchEngine


def engine_from_cluster(name: str, namespace: str, kubeconfig: Path | None) -> SearchEngine:
    api = config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)  # type: ignore[no-untyped-call]
    try:
        body: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
    except ApiException as error:
        if error.status == 404:
            raise LookupError(f"no SustainSearch {namespace}/{name} in the cluster") from None
        raise
    spec = SustainSearchSpec.model_validate(body["spec"])
    records = read_records(client.CoreV1Api(api), SearchRef(name, namespace, body["metadata"]["uid"]))
    return SearchEngine.from_archive(spec, records)
