"""Reading searches from a cluster for reports, analyses and audits: each one's spec and archive,
replayed into an engine; and a search's scored audit, kept in a ConfigMap beside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from sustaindiffusion.api.rules import STORED
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.kube.api import read_json
from sustaindiffusion.kube.archive import read_records
from sustaindiffusion.kube.audit_objects import SCORE_KEY, audit_config_map, owned_by
from sustaindiffusion.kube.builders import SearchRef
from sustaindiffusion.kube.names import audit_config_map_name
from sustaindiffusion.local.study import ARM_LABEL, RUN_LABEL, STUDY_LABEL
from sustaindiffusion.local.study_runs import StudyRun, StudyRuns, run_number
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.records import ArchiveRecord


def _client(kubeconfig: Path | None) -> client.ApiClient:
    """An API client from the kubeconfig (LookupError, with the reason, when there is none)."""
    try:
        api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None
        )
        return api
    except (ConfigException, OSError) as error:
        raise LookupError(f"no cluster to read from: {error}") from None


@dataclass(frozen=True)
class ClusterSearch:
    """A SustainSearch as read from the cluster, with the client that read it."""

    api: client.ApiClient
    ref: SearchRef
    spec_document: dict[str, Any]  # as the API returned it
    spec: SustainSearchSpec
    records: list[ArchiveRecord]

    def engine(self) -> SearchEngine:
        return SearchEngine.from_archive(self.spec, self.records)


def _get_search(api: client.ApiClient, name: str, namespace: str) -> Any:
    try:
        return client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
    except ApiException as error:
        if error.status == 404:
            raise LookupError(f"no SustainSearch {namespace}/{name} in the cluster") from None
        raise LookupError(
            f"cannot read SustainSearch {namespace}/{name}: {error.status} {error.reason}"
        ) from None


def read_search(name: str, namespace: str, kubeconfig: Path | None) -> ClusterSearch:
    api = _client(kubeconfig)
    body = _get_search(api, name, namespace)
    spec = SustainSearchSpec.model_validate(body["spec"], context=STORED)
    ref = SearchRef(name, namespace, body["metadata"]["uid"])
    return ClusterSearch(api, ref, body["spec"], spec, read_records(client.CoreV1Api(api), ref))


def engine_from_cluster(name: str, namespace: str, kubeconfig: Path | None) -> SearchEngine:
    return read_search(name, namespace, kubeconfig).engine()


def publish_audit(name: str, namespace: str, uid: str, score: dict[str, Any], kubeconfig: Path | None) -> str:
    """Write the scored audit into the search's audit ConfigMap (replacing an earlier score), once
    the cluster's search of that name is the audited one. Returns the ConfigMap's namespace/name."""
    api = _client(kubeconfig)
    body = _get_search(api, name, namespace)
    if body["metadata"]["uid"] != uid:
        raise LookupError(
            f"the SustainSearch {namespace}/{name} in the cluster is not the audited one (its uid is "
            f"{body['metadata']['uid']}, the audit set's {uid}): it was made again since the export; "
            "this score stays in the audit set only"
        )
    manifest: Any = audit_config_map(SearchRef(name, namespace, uid), score)
    core = client.CoreV1Api(api)
    target = f"{namespace}/{manifest['metadata']['name']}"
    try:
        try:
            core.create_namespaced_config_map(namespace, manifest)
        except ApiException as error:
            if error.status != 409:
                raise
            core.replace_namespaced_config_map(manifest["metadata"]["name"], namespace, manifest)
    except ApiException as error:
        raise LookupError(f"cannot write the ConfigMap {target}: {error.status} {error.reason}") from None
    return target


def audit_in_cluster(search: ClusterSearch) -> tuple[str, str] | None:
    """The search's audit ConfigMap as (its score's text, where it was read), or None when the
    search has none. A ConfigMap of that name that the search does not own (left by an earlier
    search of the same name) is no audit of this one."""
    name, namespace = audit_config_map_name(search.ref.name), search.ref.namespace
    try:
        found = read_json(client.CoreV1Api(search.api).read_namespaced_config_map, name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise LookupError(
            f"cannot read the ConfigMap {namespace}/{name}: {error.status} {error.reason}"
        ) from None
    text = (found.get("data") or {}).get(SCORE_KEY)
    if text is None or not owned_by(found, search.ref.uid):
        return None
    return text, f"ConfigMap {namespace}/{name}"


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
