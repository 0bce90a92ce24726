"""Drives one SustainSearch: read it, run one step of the generation loop, write what it decided.

Level-triggered and restart-safe: the archive and the cluster's objects are the state, so the loop
(rebuilt from the archive whenever the search's uid or spec generation changes) continues exactly
where an earlier life of the operator stopped. Everything the search decides lives in
`sustaindiffusion.search`; this module only reads and writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.status import SustainSearchStatus
from sustaindiffusion.kube.archive import ConfigMapArchive
from sustaindiffusion.kube.builders import SearchRef
from sustaindiffusion.kube.executor import KubernetesExecutor, config_map_prompts
from sustaindiffusion.operator.metrics import SearchMetrics, SearchSnapshot
from sustaindiffusion.search.decisions import Event, invalid_spec
from sustaindiffusion.search.loop import GenerationLoop
from sustaindiffusion.search.status import build_status

log = logging.getLogger(__name__)

WORKER_IMAGE_ENV = "SUSTAINDIFFUSION_WORKER_IMAGE"  # set by the Helm chart from worker.image

Body = dict[str, Any]
EventSink = Callable[[Body, str, str, str], None]  # (search object, type, reason, message)


class SearchGoneError(Exception):
    """The SustainSearch no longer exists."""


class SearchDriver:
    def __init__(
        self, api: client.ApiClient, namespace: str, name: str, metrics: SearchMetrics, events: EventSink
    ) -> None:
        self.api, self.custom = api, client.CustomObjectsApi(api)
        self.namespace, self.name = namespace, name
        self.metrics, self.events = metrics, events
        self._loop: GenerationLoop | None = None
        self._loop_of: tuple[str, int] | None = None  # (uid, metadata.generation) the loop was built for

    def step(self) -> bool:
        """One reconciliation; True when it changed something and another step should follow at once."""
        body = self._read_search()
        previous = body.get("status") or {}
        generation = int(body["metadata"].get("generation", 0))
        try:
            spec = SustainSearchSpec.model_validate(body["spec"])
        except ValidationError as error:
            decision = invalid_spec(str(error), previous)
            self._write_status(body, build_status(None, decision, previous, generation))
            self._post(body, decision.events)
            return False
        loop = self._loop_for(body, spec, generation)
        step = loop.step(previous)
        self._write_status(body, step.status)
        self._post(body, step.events)
        self.metrics.update(
            self.namespace, self.name, SearchSnapshot.of(loop.engine, step.observation.running)
        )
        return step.progressed

    def _loop_for(self, body: Body, spec: SustainSearchSpec, generation: int) -> GenerationLoop:
        uid = body["metadata"]["uid"]
        if self._loop is None or self._loop_of != (uid, generation):
            search = SearchRef(self.name, self.namespace, uid)
            self._loop = GenerationLoop(
                self.name,
                spec,
                ConfigMapArchive(client.CoreV1Api(self.api), search),
                KubernetesExecutor(self.api, search, spec, os.environ.get(WORKER_IMAGE_ENV)),
                prompts=lambda: config_map_prompts(self.api, self.namespace, spec),
                save_images=bool(spec.execution.artifacts and spec.execution.artifacts.save_images),
                observed_generation=generation,
            )
            self._loop_of = (uid, generation)
            log.info(
                "%s/%s: engine rebuilt from %d archived results",
                self.namespace,
                self.name,
                len(self._loop.engine.told),
            )
        return self._loop

    def _read_search(self) -> Body:
        try:
            body: Any = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )
        except ApiException as error:
            if error.status == 404:
                raise SearchGoneError(self.name) from None
            raise
        return dict(body)

    def _post(self, body: Body, events: list[Event]) -> None:
        for event in events:
            self.events(body, event.type, event.reason, event.message)

    def _write_status(self, body: Body, model: SustainSearchStatus) -> None:
        status = model.model_dump(mode="json", by_alias=True, exclude_none=True)
        current = body.get("status") or {}
        if _same_status(current, status):
            return
        # A merge patch keeps fields it does not name: name the ones that went away (e.g. the
        # completionTime of a search resumed by a larger generation budget) as null to remove them.
        removed = {key: None for key in current if key not in status}
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, self.name, {"status": {**status, **removed}}
        )


def _same_status(current: Body, new: Body) -> bool:
    """Equal apart from condition timestamps, which `build_status` renews when a condition changes."""

    def strip(status: Body) -> Body:
        copy = {k: v for k, v in status.items() if k != "conditions"}
        copy["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions") or []
        ]
        return copy

    return strip(current) == strip(new)
