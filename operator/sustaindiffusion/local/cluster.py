"""Reading searches from a cluster for reports and analyses: each one's spec and archive, replayed
into an engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from sustaindiffusion.api.rules import STORED
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.kube.archive import read_records
from sustaindiffusion.kube.builders import SearchRef
from sustaindiffusion.local.study import ARM_LABEL, RUN_LABEL, STUDY_LABEL
from sustaindiffusion.local.study_runs import StudyRun, StudyRuns, run_number
from sustaindiffusion.search.engine import SearchEngine


def _client(kubeconfig: Path | None) -> client.ApiClient:
    """An API client from the kubeconfig (LookupError, with the reason, when there is none)."""
    try:
        api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None
        )
        return api
    except (ConfigException, OSError) as error:
        raise LookupError(f"no cluster to read from: {error}") from None


def engine_from_cluster(name: str, namespace: str, kubeconfig: Path | None) -> SearchEngine:
    api = _client(kubeconfig)
    try:
        body: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
    except ApiException as error:
        if error.status == 404:
            raise LookupError(f"no SustainSearch {namespace}/{name} in the cluster") from None
        raise
    spec = SustainSearchSpec.model_validate(body["spec"], context=STORED)
    records = read_records(client.CoreV1Api(api), SearchRef(name, namespace, body["metadata"]["uid"]))
    return SearchEngine.from_archive(spec, records)


def cluster_runs(study: str, namespace: str, kubeconfig: Path | None) -> StudyRuns:
    """The SustainSearches of `namespace` labelled with `study`, each replayed from its archive,
    with its arm and run from its labels (as `study expand` wrote them)."""
    api = _client(kubeconfig)
    try:
        listed: Any = client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, label_selector=f"{STUDY_LABEL}={study}"
        )
    except ApiException as error:
        raise LookupError(
            f"cannot list the SustainSearches of namespace {namespace}: {error.status} {error.reason}"
        ) from None
    runs = StudyRuns()
    for body in sorted(listed["items"], key=lambda item: str(item["metadata"]["name"])):
        metadata = body["metadata"]
        labels = metadata.get("labels") or {}
        source = f"{namespace}/{metadata['name']}"
        arm, number = labels.get(ARM_LABEL), run_number(labels.get(RUN_LABEL, ""))
        if not arm or number is None:
            raise LookupError(
                f"{source} has the label {STUDY_LABEL}={study} but no {ARM_LABEL} or numeric {RUN_LABEL} "
                "label: label it, or expand the study with `sustaindiffusion study expand`"
            )
        spec = SustainSearchSpec.model_validate(body["spec"], context=STORED)
        records = read_records(client.CoreV1Api(api), SearchRef(metadata["name"], namespace, metadata["uid"]))
        runs.add(StudyRun(arm, number, source, SearchEngine.from_archive(spec, records)))
    return runs
