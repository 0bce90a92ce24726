"""Drives one SustainSearch: read it, run one step of the generation loop, write what it decided.

Level-triggered and restart-safe: the archive and the cluster's objects are the state, so the loop
(rebuilt from the archive whenever the search's uid or spec generation changes) continues exactly
where an earlier life of the operator stopped. A search the engine finished at its current spec
generation is left alone: no replay, no requests. Everything the search decides lives in
`sustaindiffusion.search`; this module only reads and writes. A failure that keeps the search
from going on is written into its status (`report`) with the API server's own message.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from sustaindiffusion.api.rules import STORED
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.status import SustainSearchStatus
from sustaindiffusion.kube.api import ApiFailure, blocked_by
from sustaindiffusion.kube.archive import ConfigMapArchive
from sustaindiffusion.kube.builders import SearchRef
from sustaindiffusion.kube.clusters import WorkerClusters
from sustaindiffusion.kube.executor import KubernetesExecutor, config_map_prompts
from sustaindiffusion.operator.metrics import SearchMetrics, SearchSnapshot
from sustaindiffusion.search.decisions import Event, invalid_spec, needs_reconciling
from sustaindiffusion.search.loop import GenerationLoop, Step
from sustaindiffusion.search.status import build_status

log = logging.getLogger(__name__)

WORKER_IMAGE_ENV = "SUSTAINDIFFUSION_WORKER_IMAGE"  # set by the Helm chart from worker.image

Body = dict[str, Any]
EventSink = Callable[[Body, str, str, str], None]  # (search object, type, reason, message)


class SearchGoneError(Exception):
    """The SustainSearch no longer exists."""


@dataclass(frozen=True)
class DriverStep:
    again: bool  # another step has work to do at once
    finished: bool  # nothing to do until the search changes: the driver may be dropped


class SearchDriver:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        metrics: SearchMetrics,
        events: EventSink,
        workers: WorkerClusters | None = None,
    ) -> None:
        self.api, self.custom = api, client.CustomObjectsApi(api)
        self.workers = workers
        self.namespace, self.name = namespace, name
        self.metrics, self.events = metrics, events
        self._loop: GenerationLoop | None = None
        self._loop_of: tuple[str, int] | None = None  # (uid, metadata.generation) the loop was built for
        self.written_version: str | None = None  # resourceVersion of this driver's last status write
        self.queued_seconds = 0.0  # time the search's workers were held back by a queue
        self._queued_since: float | None = None  # when a step last saw them held back

    @property
    def generation(self) -> int | None:
        """The generation the search is at, once its engine is built."""
        loop = self._loop
        return loop.engine.generation if loop is not None and loop.has_engine else None

    def step(self) -> DriverStep:
        """One reconciliation."""
        body = self._read_search()
        previous = body.get("status") or {}
        generation = int(body["metadata"].get("generation", 0))
        if not needs_reconciling(previous, generation):
            return DriverStep(again=False, finished=True)
        try:
            spec = SustainSearchSpec.model_validate(body["spec"], context=STORED)
        except ValidationError as error:
            decision = invalid_spec(str(error), previous)
            self._write_status(body, build_status(None, decision, previous, generation))
            self._post(body, decision.events)
            return DriverStep(again=False, finished=True)
        loop = self._loop_for(body, spec, generation)
        step = loop.step(previous)
        self._apply(body, step)
        return DriverStep(step.again, step.finished)

    def report(self, failure: ApiFailure) -> None:
        """Write `failure` into the search's status and post it as an event (best effort: the API
        may be what failed)."""
        try:
            body = self._read_search()
            previous = body.get("status") or {}
            loop = self._loop
            if loop is None:
                spec = SustainSearchSpec.model_validate(body["spec"], context=STORED)
                loop = self._loop_for(body, spec, int(body["metadata"].get("generation", 0)))
            self._apply(body, loop.blocked(blocked_by(failure), previous))
        except Exception as error:
            log.warning("%s/%s: could not report %s: %s", self.namespace, self.name, failure.kind, error)

    def _apply(self, body: Body, step: Step) -> None:
        self._write_status(body, step.status)
        self._post(body, step.events)
        queued = self._clock_queue(step)
        if self._loop is not None and self._loop.has_engine:
            snapshot = SearchSnapshot.of(
                self._loop.engine, step.observation.running, queued, self.queued_seconds
            )
            self.metrics.update(self.namespace, self.name, snapshot)

    def _clock_queue(self, step: Step) -> bool:
        """Whether the step saw the workers held back; the time between steps that saw it adds up
        (until the step that sees them admitted)."""
        now = time.monotonic()
        queued = step.observation.queued is not None and not step.observation.advanced
        if self._queued_since is not None:
            self.queued_seconds += now - self._queued_since
        self._queued_since = now if queued else None
        return queued

    def _loop_for(self, body: Body, spec: SustainSearchSpec, generation: int) -> GenerationLoop:
        uid = body["metadata"]["uid"]
        if self._loop is None or self._loop_of != (uid, generation):
            search = SearchRef(self.name, self.namespace, uid)
            self._loop = GenerationLoop(
                self.name,
                spec,
                ConfigMapArchive(client.CoreV1Api(self.api), search),
                KubernetesExecutor(self.api, search, spec, os.environ.get(WORKER_IMAGE_ENV), self.workers),
                prompts=lambda: config_map_prompts(self.api, self.namespace, spec.prompts),
                save_images=bool(spec.execution.artifacts and spec.execution.artifacts.save_images),
                observed_generation=generation,
                validation_prompts=(
                    (lambda: config_map_prompts(self.api, self.namespace, validation.prompts))
                    if (validation := spec.validation) is not None
                    else None
                ),
            )
            self._loop_of = (uid, generation)
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
        # The resourceVersion makes the write conditional: if the search changed since it was read
        # (a spec edit, another writer), the API server refuses it and the next step reads again.
        removed = {key: None for key in current if key not in status}
        patch = {
            "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
            "status": {**status, **removed},
        }
        written: Any = self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, self.name, patch
        )
        self.written_version = str((written.get("metadata") or {}).get("resourceVersion") or "") or None


def _same_status(current: Body, new: Body) -> bool:
    """Equal apart from condition timestamps, which `build_status` renews when a condition changes."""

    def strip(status: Body) -> Body:
        copy = {k: v for k, v in status.items() if k != "conditions"}
        copy["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions") or []
        ]
        return copy

    return strip(current) == strip(new)
