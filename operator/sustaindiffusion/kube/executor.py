"""The generation loop's executor on Kubernetes: a task ConfigMap and an Indexed Job per round.

Names are deterministic (`<search>-g0003`, `<search>-g0003-task`; a follow-up round `-g0003-r1`),
so launching again after a restart finds the same objects: AlreadyExists is success. Objects are
adopted only when the search owns them by uid: a ConfigMap or Job left by an earlier search of the
same name (deleted, its garbage not collected yet) is deleted, never read. What the shards produced
is read from the round's Job and the pods it owns, and classified by `kube.classify`, a pure function.

With worker clusters (`kube.clusters`, MultiKueue), Jobs are portable (`builders.worker_job`) and
a round's pods are read where its Workload says MultiKueue placed it: here, or in a worker cluster
with the operator's credentials for it. Their results finalizer is released once the generation is
archived, in every cluster that can be reached then (and at later releases, for one that could not).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from sustaindiffusion.api.spec import PromptSource, PromptsSpec, SustainSearchSpec
from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.kube import builders, kueue, names
from sustaindiffusion.kube.api import read_json
from sustaindiffusion.kube.classify import classify_round
from sustaindiffusion.kube.clusters import WorkerClusters
from sustaindiffusion.search.loop import Collected, PromptsUnavailableError

Body = dict[str, Any]
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"  # set by the Job controller on its pods
EARLIER_SEARCH = "waiting for the objects of an earlier search with this name to be removed"
CLUSTER_UNREACHABLE = "WorkerClusterUnreachable"
# A lost cluster's API server may not answer at all: do not let one read hold the operator's step.
REMOTE_TIMEOUT_S = 10

log = logging.getLogger(__name__)


class KubernetesExecutor:
    def __init__(
        self,
        api: client.ApiClient,
        search: builders.SearchRef,
        spec: SustainSearchSpec,
        default_image: str | None = None,
        workers: WorkerClusters | None = None,
    ) -> None:
        self.core, self.batch = client.CoreV1Api(api), client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.search, self.spec, self.default_image = search, spec, default_image
        self.workers = workers

    def launched_tasks(self, generation: int) -> list[EvaluationTask]:
        selector = names.selector(self.search.name, names.COMPONENT_TASK, generation)
        listing = read_json(
            self.core.list_namespaced_config_map, self.search.namespace, label_selector=selector
        )
        tasks = []
        for config_map in listing.get("items") or []:
            if not self._owned(config_map):
                self._delete(self.core.delete_namespaced_config_map, config_map["metadata"]["name"])
                continue
            try:
                task = EvaluationTask.model_validate_json(
                    (config_map.get("data") or {}).get(builders.TASK_KEY, "")
                )
            except ValidationError:
                continue  # unreadable: never launched whole; the round is built and created again
            if task.generation == generation:
                tasks.append(task)
        return sorted(tasks, key=lambda t: t.round)

    def launch(self, task: EvaluationTask) -> None:
        self._create(self.core.create_namespaced_config_map, builders.task_config_map(self.search, task))
        self._create(self.batch.create_namespaced_job, self._job(task))

    def collect(self, task: EvaluationTask) -> Collected:
        job = self._read(
            self.batch.read_namespaced_job, names.job_name(self.search.name, task.generation, task.round)
        )
        if job is None:
            # The task was written but the Job not (a restart in between): create it now.
            self._create(self.batch.create_namespaced_job, self._job(task))
            return Collected()
        if not self._owned(job):
            self._delete(self.batch.delete_namespaced_job, job["metadata"]["name"])
            return Collected(workers_pending=EARLIER_SEARCH)
        if self.workers is not None:
            collected = self._collect_placed(job, task)
        else:
            selector = f"{JOB_UID_LABEL}={job['metadata']['uid']}"
            listing = read_json(self.core.list_namespaced_pod, self.search.namespace, label_selector=selector)
            collected = classify_round(job, listing.get("items") or [], task)
        if collected.queued and self.spec.execution.queue_name:
            kueue_says = self._kueue_reason(job)
            if kueue_says:
                collected.queued_reason, collected.queued = kueue_says
        return collected

    def _collect_placed(self, job: Body, task: EvaluationTask) -> Collected:
        """A portable round: its pods where MultiKueue placed it, or here where it runs here."""
        assert self.workers is not None
        selector = self._pods_of(task.generation, task.round)
        cluster = kueue.placed_cluster(self._workloads(job))
        if cluster is None:
            listing = read_json(self.core.list_namespaced_pod, self.search.namespace, label_selector=selector)
            return classify_round(job, listing.get("items") or [], task, selected=True)
        core = self.workers.core(cluster)
        if core is None:
            return Collected(
                workers_pending=f"MultiKueue placed generation {task.generation} in worker cluster "
                f"{cluster}, and the operator has no credentials for it: add its kubeconfig to the "
                "worker clusters' Secret (see docs/multicluster.md)",
                workers_pending_reason=CLUSTER_UNREACHABLE,
            )
        try:
            listing = read_json(
                core.list_namespaced_pod,
                self.search.namespace,
                label_selector=selector,
                _request_timeout=REMOTE_TIMEOUT_S,
            )
        except (ApiException, HTTPError, OSError) as error:
            return Collected(
                workers_pending=f"worker cluster {cluster}, where MultiKueue placed generation "
                f"{task.generation}, cannot be read ({_why(error)}); MultiKueue dispatches the Job again "
                "once it counts the cluster lost",
                workers_pending_reason=CLUSTER_UNREACHABLE,
            )
        return classify_round(job, listing.get("items") or [], task, selected=True)

    def _pods_of(self, generation: int, round: int | None = None) -> str:
        """The selector of the search's portable worker pods (of a generation, of a round)."""
        return (
            names.selector(self.search.name, names.COMPONENT_WORKER, generation, round)
            + f",{names.LABEL_SEARCH_UID}={self.search.uid}"
        )

    def _workloads(self, job: Body) -> list[Body]:
        try:
            listing = read_json(
                self.custom.list_namespaced_custom_object,
                kueue.GROUP,
                kueue.VERSION,
                self.search.namespace,
                kueue.PLURAL,
                label_selector=f"{kueue.JOB_UID_LABEL}={job['metadata']['uid']}",
            )
        except ApiException as error:
            if error.status in (403, 404):
                return []  # no Kueue here (the Job runs here), or no right to read it
            raise
        return list(listing.get("items") or [])

    def release_results(self, generation: int) -> None:
        """Release the results finalizer of the search's portable pods of `generation` and before,
        here and in each worker cluster that answers (an unreachable one is tried at the next
        release). Their reports are archived by now."""
        release_results(self.core, self.workers, self.search, generation)

    def release(self, generation: int) -> None:
        """Remove the generation's Jobs (their pods go with them) and tasks; all is archived by now."""
        if self.workers is not None:
            self.release_results(generation)
        for delete, component in (
            (self.batch.delete_collection_namespaced_job, names.COMPONENT_WORKER),
            (self.core.delete_collection_namespaced_config_map, names.COMPONENT_TASK),
        ):
            delete(
                self.search.namespace,
                label_selector=names.selector(self.search.name, component, generation),
                propagation_policy="Background",
            )

    def _kueue_reason(self, job: Body) -> tuple[str, str] | None:
        """Kueue's own reason for holding the Job back, from its Workload (None: Kueue is not
        installed, or has not made the Workload yet: the generic message stays)."""
        return kueue.queued_reason(self._workloads(job), self.spec.execution.queue_name)

    # ----------------------------------------------------------------- helpers

    def _job(self, task: EvaluationTask) -> Body:
        return builders.worker_job(
            self.search, self.spec, task, self.default_image, portable=self.workers is not None
        )

    def _create(self, create: Callable[..., Any], manifest: Body) -> bool:
        try:
            create(self.search.namespace, manifest)
        except ApiException as error:
            if error.status == 409:
                return False  # created before, maybe by an earlier life of this operator
            raise
        return True

    def _read(self, read: Callable[..., Any], name: str) -> Body | None:
        try:
            return read_json(read, name, self.search.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _delete(self, delete: Callable[..., Any], name: str) -> None:
        try:
            delete(name, self.search.namespace, propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise

    def _owned(self, body: Body) -> bool:
        owners = body["metadata"].get("ownerReferences") or []
        return any(owner.get("uid") == self.search.uid for owner in owners)


def _why(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return f"{type(error).__name__}: {str(error)[:200]}"


RELEASE_ATTEMPTS = 5


def release_results(
    core: client.CoreV1Api,
    workers: WorkerClusters | None,
    search: builders.SearchRef,
    generation: int | None = None,
) -> None:
    """Release the results finalizer of `search`'s portable pods of `generation` and before, in
    this cluster (`core`) and each worker cluster that answers; None, every generation, is for a
    search that was deleted: nothing will read its pods again."""
    clusters: list[tuple[str, client.CoreV1Api]] = [("this cluster", core), *(workers or [])]
    selector = f"{names.LABEL_SEARCH_UID}={search.uid}"
    for where, cluster in clusters:
        try:
            listing = read_json(
                cluster.list_namespaced_pod,
                search.namespace,
                label_selector=selector,
                _request_timeout=REMOTE_TIMEOUT_S,
            )
            for pod in listing.get("items") or []:
                metadata = pod["metadata"]
                labelled = (metadata.get("labels") or {}).get(names.LABEL_GENERATION, "")
                if generation is None or (labelled.isdigit() and int(labelled) <= generation):
                    _release_pod(cluster, metadata)
        except (ApiException, HTTPError, OSError) as error:
            log.warning("cannot release the results of %s's pods in %s: %s", search.name, where, _why(error))


def _release_pod(core: client.CoreV1Api, metadata: Body) -> None:
    """Drop the results finalizer: a merge patch replaces the list (a strategic merge would merge
    it back), and the resourceVersion makes it fail rather than undo a concurrent change (the Job
    controller drops its own finalizer from the same list); on such a conflict, read the pod again
    and retry: a release may be the search's last."""
    for _ in range(RELEASE_ATTEMPTS):
        held = metadata.get("finalizers") or []
        if builders.RESULTS_FINALIZER not in held:
            return
        patch = {
            "metadata": {
                "finalizers": [f for f in held if f != builders.RESULTS_FINALIZER],
                "resourceVersion": metadata["resourceVersion"],
            }
        }
        try:
            core.patch_namespaced_pod(
                metadata["name"],
                metadata["namespace"],
                patch,
                _content_type="application/merge-patch+json",
                _request_timeout=REMOTE_TIMEOUT_S,
            )
            return
        except ApiException as error:
            if error.status == 404:
                return
            if error.status != 409:
                raise
        try:
            metadata = read_json(
                core.read_namespaced_pod,
                metadata["name"],
                metadata["namespace"],
                _request_timeout=REMOTE_TIMEOUT_S,
            )["metadata"]
        except ApiException as error:
            if error.status == 404:
                return
            raise


def config_map_prompts(
    api: client.ApiClient, namespace: str, source: PromptsSpec | PromptSource
) -> list[str]:
    """The inline prompts of `source` and those of its ConfigMap key (one per line, blanks skipped)."""
    prompts = list(source.inline or [])
    reference = source.config_map_ref
    if reference is not None:
        where = f"ConfigMap {namespace}/{reference.name}"
        try:
            data = client.CoreV1Api(api).read_namespaced_config_map(reference.name, namespace).data or {}
        except ApiException as error:
            if error.status == 404:
                raise PromptsUnavailableError(f"the prompts {where} does not exist") from None
            raise
        if reference.key not in data:
            raise PromptsUnavailableError(f"the prompts {where} has no key {reference.key!r}")
        prompts += [line.strip() for line in data[reference.key].splitlines() if line.strip()]
    if not prompts:
        raise PromptsUnavailableError("the prompts ConfigMap holds no prompt")
    return prompts
