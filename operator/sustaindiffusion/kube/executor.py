"""The generation loop's executor on Kubernetes: a task ConfigMap and an Indexed Job per generation.

Names are deterministic (`<search>-g0003`, `<search>-g0003-task`), so launching again after a
restart finds the same objects: AlreadyExists is success. What the shards produced is read from the
Job and its pods and classified by `kube.classify`, a pure function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.kube import builders, names
from sustaindiffusion.kube.classify import classify_generation
from sustaindiffusion.search.loop import Collected, PromptsUnavailableError

Body = dict[str, Any]


class KubernetesExecutor:
    def __init__(
        self,
        api: client.ApiClient,
        search: builders.SearchRef,
        spec: SustainSearchSpec,
        default_image: str | None = None,
    ) -> None:
        self.core, self.batch = client.CoreV1Api(api), client.BatchV1Api(api)
        self.search, self.spec, self.default_image = search, spec, default_image

    def launched_task(self, generation: int) -> EvaluationTask | None:
        name = names.task_config_map_name(self.search.name, generation)
        config_map = self._read(self.core.read_namespaced_config_map, name)
        if config_map is None or not self._owned(config_map):
            return None
        try:
            return EvaluationTask.model_validate_json(
                (config_map.get("data") or {}).get(builders.TASK_KEY, "")
            )
        except ValidationError:
            return None  # unreadable: the task is built again and the ConfigMap replaced below

    def launch(self, task: EvaluationTask) -> bool:
        self._create(self.core.create_namespaced_config_map, builders.task_config_map(self.search, task))
        job = builders.worker_job(
            self.search, self.spec, task.generation, task.shard_count, self.default_image
        )
        return self._create(self.batch.create_namespaced_job, job)

    def collect(self, task: EvaluationTask) -> Collected:
        job = self._read(self.batch.read_namespaced_job, names.job_name(self.search.name, task.generation))
        if job is None:
            return Collected()
        selector = names.selector(self.search.name, names.COMPONENT_WORKER, task.generation)
        listing = self.core.list_namespaced_pod(self.search.namespace, label_selector=selector)
        pods = [self._plain(pod) for pod in listing.items]
        return classify_generation(job, pods, task.shard_count)

    def release(self, generation: int) -> None:
        """Remove the generation's Job (its pods go with it) and task; both are archived by now."""
        for delete, name in (
            (self.batch.delete_namespaced_job, names.job_name(self.search.name, generation)),
            (
                self.core.delete_namespaced_config_map,
                names.task_config_map_name(self.search.name, generation),
            ),
        ):
            try:
                delete(name, self.search.namespace, propagation_policy="Background")
            except ApiException as error:
                if error.status != 404:
                    raise

    # ----------------------------------------------------------------- helpers

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
            return self._plain(read(name, self.search.namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _owned(self, body: Body) -> bool:
        owners = body["metadata"].get("ownerReferences") or []
        return any(owner.get("uid") == self.search.uid for owner in owners)

    def _plain(self, obj: Any) -> Body:
        plain: Body = self.core.api_client.sanitize_for_serialization(obj)
        return plain


def config_map_prompts(api: client.ApiClient, namespace: str, spec: SustainSearchSpec) -> list[str]:
    """The spec's inline prompts and those of its prompts ConfigMap (one per line, blanks skipped)."""
    prompts = list(spec.prompts.inline or [])
    reference = spec.prompts.config_map_ref
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
