"""Drives one SustainSearch: level-triggered, restart-safe reconciliation.

Each `step()` reads the search, rebuilds the engine from the archive when it has none (deterministic
replay), makes sure the current generation's task ConfigMap and Indexed Job exist (deterministic
names, AlreadyExists is success), ingests results from finished worker pods (archive first, then
the engine), records shards the Job gave up on as failed, and writes the status. Killing the
operator at any moment loses nothing: the archive and the Jobs are the state, and a finished
candidate is never evaluated again because its result is in the archive before the engine hears of it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.status import Phase
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate
from sustaindiffusion.api.wire import REASON_LIMIT, decode_report
from sustaindiffusion.operator import builders, names
from sustaindiffusion.operator.archive import (
    RECORDS_KEY,
    ArchiveRecord,
    append_lines,
    parse_chunk,
    read_archive,
)
from sustaindiffusion.operator.engine.search import SearchEngine
from sustaindiffusion.operator.metrics import SearchMetrics, SearchSnapshot
from sustaindiffusion.operator.status import (
    COMPLETE,
    FAILED,
    PROGRESSING,
    QUEUED,
    WORKERS_PENDING,
    ConditionUpdate,
    Observation,
    build_status,
    now,
)

log = logging.getLogger(__name__)

WORKER_IMAGE_ENV = "SUSTAINDIFFUSION_WORKER_IMAGE"  # set by the Helm chart from worker.image
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
STUCK_WAITING_REASONS = {"ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName"}

Body = dict[str, Any]
EventSink = Callable[[Body, str, str, str], None]  # (search object, type, reason, message)


class SearchGoneError(Exception):
    """The SustainSearch no longer exists."""


@dataclass
class _Shards:
    """Where the current generation stands, read from its Job and pods."""

    results: list[tuple[int, EvaluationResult]] = field(default_factory=list)  # (shard, result)
    failed_shards: dict[int, str] = field(default_factory=dict)  # shard -> reason, given up by the Job
    suspended: bool = False
    pending_reason: str | None = None


class SearchDriver:
    def __init__(
        self, api: client.ApiClient, namespace: str, name: str, metrics: SearchMetrics, events: EventSink
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace, self.name = namespace, name
        self.metrics, self.events = metrics, events
        self.engine: SearchEngine | None = None
        self._engine_spec_generation: int | None = None
        self._archive: list[tuple[str, str]] = []  # (ConfigMap name, text), in order

    # ----------------------------------------------------------------- the loop body

    def step(self) -> bool:
        """One reconciliation; True when it changed something and another step should follow at once."""
        body = self._read_search()
        try:
            spec = SustainSearchSpec.model_validate(body["spec"])
        except ValidationError as error:
            self._write_status(body, self._invalid_observation(body, str(error)))
            return False
        if self.engine is None or self._engine_spec_generation != body["metadata"].get("generation"):
            self._rebuild_engine(spec, body)
        engine = self.engine
        assert engine is not None
        if engine.failures > spec.execution.max_failed_candidates:
            message = (
                f"{engine.failures} candidates failed, more than spec.execution.maxFailedCandidates "
                f"({spec.execution.max_failed_candidates}); see the archive for their reasons"
            )
            self._finish(body, engine, Phase.FAILED, "TooManyFailures", message)
            return False
        if engine.finished:
            defaults_failed = engine.scales is None
            phase = Phase.FAILED if defaults_failed else Phase.SUCCEEDED
            reason = "BaselineFailed" if defaults_failed else "SearchFinished"
            self._finish(body, engine, phase, reason, engine.termination_reason or "")
            return False

        generation = engine.generation
        candidates = engine.current_candidates()
        missing = {c.candidate_id for c in engine.ask()}
        prompts = self._prompts(spec)
        if prompts is None:
            self._write_status(
                body, self._observation(body, engine, len(missing), waiting="PromptsUnavailable")
            )
            return False
        shard_size = spec.execution.candidates_per_pod
        task = EvaluationTask.of(
            self.name,
            spec,
            generation,
            prompts,
            [TaskCandidate(candidate_id=c.candidate_id, settings=c.settings) for c in candidates],
            candidates_per_shard=shard_size,
            save_images=bool(spec.execution.artifacts and spec.execution.artifacts.save_images),
        )
        ref = builders.SearchRef(self.name, self.namespace, body["metadata"]["uid"])
        self._create(self.core.create_namespaced_config_map, builders.task_config_map(ref, task))
        created = self._create(
            self.batch.create_namespaced_job,
            builders.worker_job(ref, spec, generation, task.shard_count, os.environ.get(WORKER_IMAGE_ENV)),
        )
        if created:
            self.events(
                body,
                "Normal",
                "GenerationStarted",
                f"generation {generation}: {len(candidates)} candidates in {task.shard_count} shards",
            )

        shards = self._observe_generation(generation, task)
        new: list[ArchiveRecord] = []
        for _shard, result in shards.results:
            if result.candidate_id in missing and all(
                r.result.candidate_id != result.candidate_id for r in new
            ):
                new.append(ArchiveRecord(generation, result))
        for shard, reason in shards.failed_shards.items():
            for candidate in task.shard(shard):
                if candidate.candidate_id in missing and all(
                    r.result.candidate_id != candidate.candidate_id for r in new
                ):
                    new.append(
                        ArchiveRecord(
                            generation, EvaluationResult.failed(candidate.candidate_id, reason[:REASON_LIMIT])
                        )
                    )
        if new:
            self._append_archive(ref, new)  # durable first ...
            for record in new:
                engine.tell(record.result)  # ... then the engine
                if not record.result.ok:
                    self.events(
                        body,
                        "Warning",
                        "CandidateFailed",
                        f"candidate {record.result.candidate_id}: {record.result.reason}",
                    )
        advanced = engine.generation != generation
        if advanced:
            self.events(
                body,
                "Normal",
                "GenerationFinished",
                f"generation {generation} finished; hypervolume {self._hypervolume(engine)}",
            )
            self._delete_generation(generation)
        running = 0 if advanced else len({c.candidate_id for c in engine.ask()})
        self._write_status(
            body, self._observation(body, engine, running, shards=None if advanced else shards)
        )
        return bool(new) or advanced or created

    # ----------------------------------------------------------------- engine and archive

    def _rebuild_engine(self, spec: SustainSearchSpec, body: Body) -> None:
        self._archive = read_archive(self.core, self.namespace, self.name, body["metadata"]["uid"])
        records = [record for _, text in self._archive for record in parse_chunk(text)]
        self.engine = SearchEngine.replay(spec, [r.result for r in records])
        self._engine_spec_generation = body["metadata"].get("generation")
        log.info("%s/%s: engine rebuilt from %d archived results", self.namespace, self.name, len(records))

    def _append_archive(self, ref: builders.SearchRef, records: list[ArchiveRecord]) -> None:
        remaining = records
        while remaining:
            if self._archive:
                name, text = self._archive[-1]
                updated, remaining = append_lines(text, remaining)
                if updated != text:
                    self.core.patch_namespaced_config_map(
                        name, self.namespace, {"data": {RECORDS_KEY: updated}}
                    )
                    self._archive[-1] = (name, updated)
                    continue
            name = names.archive_config_map_name(self.name, len(self._archive))
            text, remaining = append_lines("", remaining)
            manifest: Any = {
                "metadata": {
                    "name": name,
                    "labels": names.labels(self.name, names.COMPONENT_ARCHIVE),
                    "ownerReferences": [ref.owner_reference()],
                },
                "data": {RECORDS_KEY: text},
            }
            self.core.create_namespaced_config_map(self.namespace, manifest)
            self._archive.append((name, text))

    # ----------------------------------------------------------------- cluster reads

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

    def _prompts(self, spec: SustainSearchSpec) -> list[str] | None:
        prompts = list(spec.prompts.inline or [])
        reference = spec.prompts.config_map_ref
        if reference is not None:
            try:
                data = self.core.read_namespaced_config_map(reference.name, self.namespace).data or {}
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            if reference.key not in data:
                return None
            prompts += [line.strip() for line in data[reference.key].splitlines() if line.strip()]
        return prompts or None

    def _observe_generation(self, generation: int, task: EvaluationTask) -> _Shards:
        shards = _Shards()
        try:
            job = self._plain(
                self.batch.read_namespaced_job(names.job_name(self.name, generation), self.namespace)
            )
        except ApiException as error:
            if error.status == 404:
                return shards
            raise
        shards.suspended = bool(job["spec"].get("suspend"))
        failed_indexes = _parse_indexes((job.get("status") or {}).get("failedIndexes"))
        listing = self.core.list_namespaced_pod(
            self.namespace, label_selector=names.selector(self.name, names.COMPONENT_WORKER, generation)
        )
        pods = [self._plain(pod) for pod in listing.items]
        last_failure: dict[int, str] = {}
        for pod in sorted(pods, key=lambda p: str(p["metadata"].get("creationTimestamp", ""))):
            index = int((pod["metadata"].get("annotations") or {}).get(INDEX_ANNOTATION, "-1"))
            phase = (pod.get("status") or {}).get("phase")
            terminated = _terminated(pod)
            if phase == "Succeeded" and terminated is not None:
                try:
                    report = decode_report(terminated.get("message") or "")
                except ValueError as error:
                    last_failure[index] = f"shard {index}: unreadable worker report ({error})"
                    continue
                shards.results.extend((index, result) for result in report.results)
            elif phase == "Failed":
                last_failure[index] = _failure_reason(index, pod, terminated)
            elif phase == "Pending":
                shards.pending_reason = shards.pending_reason or _pending_reason(pod)
        for index in failed_indexes:
            if 0 <= index < task.shard_count:
                shards.failed_shards[index] = last_failure.get(index, f"shard {index} failed")
        return shards

    def _plain(self, obj: Any) -> Body:
        plain: Body = self.core.api_client.sanitize_for_serialization(obj)
        return plain

    # ----------------------------------------------------------------- writes

    def _create(self, create: Callable[..., Any], manifest: Body) -> bool:
        try:
            create(self.namespace, manifest)
        except ApiException as error:
            if error.status == 409:
                return False  # created before, maybe by an earlier life of this operator
            raise
        return True

    def _delete_generation(self, generation: int) -> None:
        """A finished generation's Job and task are archived; remove them (pods go with the Job)."""
        for delete, name in (
            (self.batch.delete_namespaced_job, names.job_name(self.name, generation)),
            (self.core.delete_namespaced_config_map, names.task_config_map_name(self.name, generation)),
        ):
            try:
                delete(name, self.namespace, propagation_policy="Background")
            except ApiException as error:
                if error.status != 404:
                    raise

    def _finish(self, body: Body, engine: SearchEngine, phase: Phase, reason: str, message: str) -> None:
        status = body.get("status") or {}
        if status.get("phase") != phase.value:
            self.events(body, "Normal" if phase is Phase.SUCCEEDED else "Warning", reason, message)
        observation = self._observation(body, engine, 0, final=(phase, reason, message))
        self._write_status(body, observation)

    def _observation(
        self,
        body: Body,
        engine: SearchEngine,
        running: int,
        shards: _Shards | None = None,
        waiting: str | None = None,
        final: tuple[Phase, str, str] | None = None,
    ) -> Observation:
        status = body.get("status") or {}
        start = status.get("startTime") or now()
        generation = int(body["metadata"].get("generation", 0))
        if final is not None:
            phase, reason, message = final
            done = phase is Phase.SUCCEEDED
            return Observation(
                phase=phase,
                observed_generation=generation,
                running=0,
                conditions=[
                    ConditionUpdate(PROGRESSING, False, reason, message),
                    ConditionUpdate(COMPLETE, done, reason, message),
                    ConditionUpdate(FAILED, not done, reason, message),
                ],
                message=message,
                start_time=start,
                completion_time=status.get("completionTime") or now(),
            )
        conditions = [
            ConditionUpdate(PROGRESSING, True, "GenerationRunning", f"generation {engine.generation}")
        ]
        message = f"generation {engine.generation}: {running} candidates being evaluated"
        if waiting:
            conditions = [
                ConditionUpdate(PROGRESSING, False, waiting, "the prompts ConfigMap or its key is missing")
            ]
            message = "waiting for the prompts ConfigMap"
        if shards is not None:
            conditions.append(
                ConditionUpdate(
                    QUEUED,
                    shards.suspended,
                    "JobSuspended" if shards.suspended else "Admitted",
                    "the generation's Job is suspended (queued, e.g. by Kueue)" if shards.suspended else "",
                )
            )
            if shards.suspended and not _condition_true(status, QUEUED):
                self.events(
                    body,
                    "Normal",
                    "Queued",
                    f"generation {engine.generation} is queued: its Job is suspended",
                )
            pending = shards.pending_reason
            conditions.append(
                ConditionUpdate(
                    WORKERS_PENDING, pending is not None, "PodPending" if pending else "None", pending or ""
                )
            )
            if pending and not _condition_true(status, WORKERS_PENDING):
                self.events(body, "Warning", "WorkersPending", pending)
        return Observation(
            phase=Phase.RUNNING,
            observed_generation=generation,
            running=running,
            conditions=conditions,
            message=message,
            start_time=start,
        )

    def _invalid_observation(self, body: Body, error: str) -> Observation:
        message = f"invalid spec: {error}"[:4000]
        return Observation(
            phase=Phase.FAILED,
            observed_generation=int(body["metadata"].get("generation", 0)),
            running=0,
            conditions=[ConditionUpdate(FAILED, True, "InvalidSpec", message)],
            message=message,
        )

    def _write_status(self, body: Body, observation: Observation) -> None:
        engine = self.engine
        if engine is None:
            status = {"phase": observation.phase.value, "message": observation.message}
        else:
            spec = engine.spec
            model = build_status(
                engine,
                observation,
                (body.get("status") or {}).get("conditions") or [],
                spec.reporting.max_front_entries,
            )
            status = model.model_dump(mode="json", by_alias=True, exclude_none=True)
            self.metrics.update(self.namespace, self.name, SearchSnapshot.of(engine, observation.running))
        current = body.get("status") or {}
        if _same_status(current, status):
            return
        # A merge patch keeps fields it does not name: name the ones that went away (e.g. the
        # completionTime of a search resumed by a larger generation budget) as null to remove them.
        removed = {key: None for key in current if key not in status}
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, self.name, {"status": {**status, **removed}}
        )

    @staticmethod
    def _hypervolume(engine: SearchEngine) -> str:
        return f"{engine.hypervolume_history[-1]:.4f}" if engine.hypervolume_history else "n/a"


# --------------------------------------------------------------------------- helpers


def _parse_indexes(text: str | None) -> list[int]:
    """Job index sets such as "1,3-5" to [1, 3, 4, 5]."""
    indexes: list[int] = []
    for part in (text or "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        indexes.extend(range(int(low), int(high or low) + 1))
    return indexes


def _terminated(pod: Body) -> Body | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if status.get("name") == builders.WORKER_CONTAINER and terminated:
            return dict(terminated)
    return None


def _failure_reason(index: int, pod: Body, terminated: Body | None) -> str:
    message = (terminated or {}).get("message") or ""
    if message.strip():
        try:
            fatal = decode_report(message).fatal
        except ValueError:
            fatal = message.strip().splitlines()[-1]
        if fatal:
            return f"shard {index}: {fatal}"
    if terminated is not None:
        code, reason = terminated.get("exitCode"), terminated.get("reason") or "Error"
        return f"shard {index}: worker exited with code {code} ({reason})"
    status = pod.get("status") or {}
    return f"shard {index}: pod failed ({status.get('reason') or 'unknown'}: {status.get('message') or ''})"


def _pending_reason(pod: Body) -> str | None:
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"pod {name} is unschedulable: {condition.get('message') or condition.get('reason')}"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") in STUCK_WAITING_REASONS:
            return f"pod {name}: {waiting['reason']}: {waiting.get('message') or ''}".strip()
    return None


def _condition_true(status: Body, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or [])


def _same_status(current: Body, new: Body) -> bool:
    """Equal apart from timestamps that `build_status` renews on every pass."""

    def strip(status: Body) -> Body:
        copy = {k: v for k, v in status.items() if k not in ("conditions",)}
        copy["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions") or []
        ]
        return copy

    return strip(current) == strip(new)
