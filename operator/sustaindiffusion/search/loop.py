"""The one generation loop of a search, driven by both runtimes through an executor.

    loop = GenerationLoop(name, spec, archive, executor, prompts)
    step = loop.step(previous_status)      # read, decide, write: one level-triggered pass
    write(step.status); post(step.events)  # what the runtime does with it

A step rebuilds the engine from the archive on first use (deterministic replay); when the engine's
outcome is final, it releases the generation in flight and reports; otherwise it makes sure the
current generation runs (its task: prompts, candidates and the shard map), collects what the
generation's shards produced, and ingests new results, archive first and then the engine, so a
runtime killed at any moment loses nothing and evaluates nothing twice. A generation that completes
is released. The decisions (phase, conditions, events) are `decisions.decide`'s.

The executor is the runtime's part: Kubernetes (task ConfigMap, Indexed Job, pods) in the operator,
worker subprocesses in `sustaindiffusion run`. The archive is the runtime's store (ConfigMap chunks,
or a local JSON-lines file) of records in `records` format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.status import SustainSearchStatus
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate
from sustaindiffusion.api.wire import REASON_LIMIT
from sustaindiffusion.search.decisions import (
    PROMPTS_UNAVAILABLE,
    Blocked,
    Event,
    Launch,
    Observation,
    decide,
)
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.records import ArchiveRecord
from sustaindiffusion.search.status import build_status


class PromptsUnavailableError(Exception):
    """The prompts cannot be read now (a ConfigMap or key missing); the message says which."""


@dataclass
class Collected:
    """What a generation's shards produced so far, and why the rest may wait."""

    results: list[tuple[int, EvaluationResult]] = field(default_factory=list)  # (shard, result)
    failed_shards: dict[int, str] = field(default_factory=dict)  # shard -> why it was given up
    queued: str | None = None  # held back by a queue (a suspended Job)
    workers_pending: str | None = None  # workers started but cannot run (unschedulable, image pull)


class Executor(Protocol):
    """Runs a generation's task somewhere and reports what its shards produced."""

    def launched_task(self, generation: int) -> EvaluationTask | None:
        """The task the generation was launched with, if it was: its shard map is the one that counts."""

    def launch(self, task: EvaluationTask) -> bool:
        """Make sure the task runs (idempotent); True when this call started it."""

    def collect(self, task: EvaluationTask) -> Collected:
        """Results and failed shards of the task so far."""

    def release(self, generation: int) -> None:
        """The generation is over (archived, or the search stopped): free what it holds."""


class Archive(Protocol):
    """The durable record of every told result, in order."""

    def read(self) -> list[ArchiveRecord]: ...

    def append(self, records: Sequence[ArchiveRecord]) -> None: ...


PromptSource = Callable[[], list[str]]


@dataclass(frozen=True)
class Step:
    """What one pass decided: the status to write and the events to post."""

    status: SustainSearchStatus
    events: list[Event]
    progressed: bool  # something changed; another step may follow at once
    finished: bool
    observation: Observation


class GenerationLoop:
    def __init__(
        self,
        name: str,
        spec: SustainSearchSpec,
        archive: Archive,
        executor: Executor,
        prompts: PromptSource,
        save_images: bool,
        observed_generation: int = 1,
    ) -> None:
        self.name, self.spec, self.archive, self.executor = name, spec, archive, executor
        self.prompts, self.save_images = prompts, save_images
        self.observed_generation = observed_generation
        self._engine: SearchEngine | None = None
        self._released: set[int] = set()

    @property
    def engine(self) -> SearchEngine:
        """The engine, rebuilt from the archive on first use."""
        if self._engine is None:
            self._engine = SearchEngine.replay(self.spec, [r.result for r in self.archive.read()])
        return self._engine

    def step(self, previous: Mapping[str, Any]) -> Step:
        engine = self.engine
        generation = engine.generation
        if engine.outcome().finished:
            self._release(generation)  # a stopped search leaves no worker running
            return self._report(Observation(generation, engine.outcome()), previous, progressed=False)
        task = self.executor.launched_task(generation)
        if task is None:
            try:
                task = self._task(generation)
            except PromptsUnavailableError as error:
                blocked = Blocked(PROMPTS_UNAVAILABLE, str(error))
                observation = Observation(generation, engine.outcome(), blocked=blocked)
                return self._report(observation, previous, progressed=False)
        launched = self.executor.launch(task)
        collected = self.executor.collect(task)
        records = new_records(task, collected, {c.candidate_id for c in engine.pending()})
        told = self._ingest(records)
        advanced = engine.generation != generation
        if advanced or engine.outcome().finished:
            self._release(generation)
        observation = Observation(
            generation,
            engine.outcome(),
            candidates=len(task.candidates),
            running=0 if advanced else len(engine.pending()),
            launched=Launch(len(task.candidates), task.shard_count) if launched else None,
            ingested=told,
            advanced=advanced,
            hypervolume=engine.hypervolume_history[-1] if advanced and engine.hypervolume_history else None,
            queued=collected.queued,
            workers_pending=collected.workers_pending,
        )
        return self._report(observation, previous, progressed=bool(told) or advanced or launched)

    # ----------------------------------------------------------------- internals

    def _task(self, generation: int) -> EvaluationTask:
        engine = self.engine
        return EvaluationTask.of(
            self.name,
            self.spec,
            generation,
            self.prompts(),
            [
                TaskCandidate(candidate_id=c.candidate_id, settings=c.settings)
                for c in engine.current_candidates()
            ],
            candidates_per_shard=self.spec.execution.candidates_per_pod,
            save_images=self.save_images,
        )

    def _ingest(self, records: list[ArchiveRecord]) -> list[ArchiveRecord]:
        """Archive first, then the engine; the engine is told each record as it reads back from the
        archive's format, so a replay sees exactly what the live engine saw."""
        if not records:
            return []
        self.archive.append(records)
        told = [ArchiveRecord.from_line(record.to_line()) for record in records]
        for record in told:
            self.engine.tell(record.result)
        return told

    def _release(self, generation: int) -> None:
        if generation not in self._released:
            self.executor.release(generation)
            self._released.add(generation)

    def _report(self, observation: Observation, previous: Mapping[str, Any], progressed: bool) -> Step:
        decision = decide(observation, previous)
        status = build_status(
            self.engine, decision, previous, self.observed_generation, running=observation.running
        )
        return Step(status, decision.events, progressed, decision.finished, observation)


def new_records(task: EvaluationTask, collected: Collected, pending: set[str]) -> list[ArchiveRecord]:
    """Records for the pending candidates that `collected` settles, in shard order: a shard's own
    results (a result for a candidate of another shard is ignored), then a failure with the shard's
    reason for each candidate of a shard that was given up without a result for it."""
    records: dict[str, ArchiveRecord] = {}
    members = {index: {c.candidate_id for c in task.shard(index)} for index in range(task.shard_count)}
    for shard, result in collected.results:
        candidate_id = result.candidate_id
        if candidate_id in pending and candidate_id in members.get(shard, set()):
            records.setdefault(candidate_id, ArchiveRecord(generation=task.generation, result=result))
    for shard, reason in sorted(collected.failed_shards.items()):
        for candidate in task.shard(shard) if shard in members else []:
            if candidate.candidate_id in pending and candidate.candidate_id not in records:
                failure = EvaluationResult.failed(candidate.candidate_id, reason[:REASON_LIMIT])
                records[candidate.candidate_id] = ArchiveRecord(generation=task.generation, result=failure)
    return list(records.values())
