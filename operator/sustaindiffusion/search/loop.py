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

A shard that settles without a usable result for some of its candidates (a report lost, unreadable,
partial, or a fatal error with exit code 0) is a failed attempt for them, never a hang: once every
shard of the round has settled, a follow-up round holds just those candidates, until a candidate
has used its 1 + `execution.retriesPerCandidate` attempts; then it is recorded failed with the
reason. A shard the executor gave up (its own retries spent, or a task that cannot succeed as
written) fails its candidates at once.

The executor is the runtime's part: Kubernetes (task ConfigMap, Indexed Job, pods) in the operator,
worker subprocesses in `sustaindiffusion run`. The archive is the runtime's store (ConfigMap chunks,
or a local JSON-lines file) of records in `records` format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sustaindiffusion.api.prompts_overlap import first_overlap, overlap_message
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import VALIDATION_PROMPTS_LIMIT, SustainSearchSpec
from sustaindiffusion.api.status import SustainSearchStatus
from sustaindiffusion.api.task import EvaluationTask, Part
from sustaindiffusion.api.wire import REASON_LIMIT, ReportError, decode_report
from sustaindiffusion.search.decisions import (
    PROMPTS_OVERLAP,
    PROMPTS_UNAVAILABLE,
    REPLAY_MISMATCH,
    Blocked,
    CrossCheckView,
    Event,
    Launch,
    Observation,
    decide,
)
from sustaindiffusion.search.engine import ReplayMismatchError, SearchEngine
from sustaindiffusion.search.outcome import Outcome, OutcomeReason, OutcomeState
from sustaindiffusion.search.phases.base import ImagePlan
from sustaindiffusion.search.records import ArchiveRecord, RecordError
from sustaindiffusion.search.status import build_status


class PromptsUnavailableError(Exception):
    """The prompts cannot be read now (a ConfigMap or key missing); the message says which."""


class PromptsOverlapError(Exception):
    """A held-out prompt is a search prompt (from a ConfigMap, which the API server's rule cannot
    read, or in a spec stored before the rule): a held-out figure on it would be in-sample."""


@dataclass
class ShardOutcome:
    """How a settled shard ended: its usable results, and why its other candidates have none."""

    results: list[EvaluationResult] = field(default_factory=list)
    failure: str | None = None  # why (some of) the shard's candidates have no usable result
    attempts: int = 1  # worker runs the shard took in its round
    final: bool = False  # the executor gave the shard up: no follow-up round may help


@dataclass
class Collected:
    """What a round's shards produced so far (settled shards only), and why the rest may wait."""

    shards: dict[int, ShardOutcome] = field(default_factory=dict)
    queued: str | None = None  # held back by a queue (a suspended Job)
    queued_reason: str = "JobSuspended"  # the queue's own reason where it gives one (Kueue's)
    workers_pending: str | None = None  # workers started but cannot run (unschedulable, image pull)
    workers_pending_reason: str = "PodPending"  # or WorkerClusterUnreachable (MultiKueue)


class Executor(Protocol):
    """Runs the rounds of a generation somewhere and reports what their shards produced."""

    def launched_tasks(self, generation: int) -> list[EvaluationTask]:
        """The tasks the generation's rounds were launched with, by round; their shard maps count."""

    def launch(self, task: EvaluationTask) -> None:
        """Start the task's round (idempotent)."""

    def collect(self, task: EvaluationTask) -> Collected:
        """The round's settled shards so far."""

    def release(self, generation: int) -> None:
        """The generation is over (archived, or the search stopped): free what its rounds hold."""


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
    progressed: bool  # something changed
    finished: bool
    observation: Observation
    again: bool = False  # another step has work to do at once (what comes next could not start)


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
        validation_prompts: PromptSource | None = None,
    ) -> None:
        self.name, self.spec, self.archive, self.executor = name, spec, archive, executor
        self.prompts, self.save_images = prompts, save_images
        self.validation_prompts = validation_prompts or _no_validation_prompts
        self.observed_generation = observed_generation
        self._engine: SearchEngine | None = None
        self._released: set[int] = set()

    @property
    def engine(self) -> SearchEngine:
        """The engine, rebuilt from the archive on first use (ReplayMismatchError if it cannot be)."""
        if self._engine is None:
            self._engine = SearchEngine.from_archive(self.spec, self.archive.read())
        return self._engine

    @property
    def has_engine(self) -> bool:
        return self._engine is not None

    def step(self, previous: Mapping[str, Any]) -> Step:
        try:
            engine = self.engine
        except (ReplayMismatchError, RecordError) as error:
            return self.blocked(Blocked(REPLAY_MISMATCH, replay_advice(str(error)), fatal=True), previous)
        generation = engine.generation
        if engine.outcome().finished:
            self._release(generation)  # a stopped search leaves no worker running
            observation = Observation(
                generation,
                engine.outcome(),
                devices=engine.ledger.devices(),
                cross_check=self._cross_check(engine),
            )
            return self._report(observation, previous, progressed=False)
        launched_rounds = self.executor.launched_tasks(generation)
        plan = engine.plan()
        tasks = [task for task in launched_rounds if plan.launched_as(task)]
        launched: Launch | None = None
        if not tasks:
            try:
                first = self._task(plan, round=1 + max((t.round for t in launched_rounds), default=-1))
            except PromptsOverlapError as error:
                return self.blocked(Blocked(PROMPTS_OVERLAP, str(error), fatal=True), previous)
            except PromptsUnavailableError as error:
                return self.blocked(Blocked(PROMPTS_UNAVAILABLE, str(error)), previous)
            self.executor.launch(first)
            tasks, launched = [first], Launch(len(first.candidates), first.shard_count, plan.detail)
        mismatch = _task_mismatch(tasks, plan)
        if mismatch is not None:
            return self.blocked(Blocked(REPLAY_MISMATCH, replay_advice(mismatch), fatal=True), previous)
        rounds = [(task, self.executor.collect(task)) for task in tasks]
        settlement = settle(rounds, {c.candidate_id for c in engine.pending()})
        batch = plan.batch if plan.part is Part.BATCH else None
        told = self._ingest(
            [r.model_copy(update={"part": plan.part, "batch": batch}) for r in settlement.records]
        )
        advanced = engine.generation != generation
        # The screening decided (the rest comes next), or the adaptive policy's next batch does.
        moved_on = advanced or engine.part is not plan.part or engine.batch != plan.batch
        follow_up = None
        if settlement.retry and not moved_on and not engine.outcome().finished:
            follow_up = self._follow_up(tasks, settlement.retry)
            self.executor.launch(follow_up)
        next_launched = None
        if moved_on and not engine.outcome().finished:
            # What comes next starts in this step, before the release and the status write: the
            # time from a generation's last result to the next generation's workers is the search's
            # idle time on the cluster.
            next_launched = self._launch_next([] if advanced else launched_rounds)
        if advanced or engine.outcome().finished:
            self._release(generation)
        latest = rounds[-1][1]
        observation = Observation(
            generation,
            engine.outcome(),
            candidates=len(tasks[0].candidates),
            running=len(engine.pending()) if next_launched or not advanced else 0,
            launched=launched,
            next_launched=next_launched,
            retried=len(follow_up.candidates) if follow_up else 0,
            ingested=told,
            advanced=advanced,
            hypervolume=engine.hypervolume_history[-1] if advanced and engine.hypervolume_history else None,
            queued=latest.queued,
            queued_reason=latest.queued_reason,
            workers_pending=latest.workers_pending,
            workers_pending_reason=latest.workers_pending_reason,
            devices=engine.ledger.devices(),
            cross_check=self._cross_check(engine),
        )
        progressed = bool(told) or moved_on or launched is not None or follow_up is not None
        again = moved_on and next_launched is None and not engine.outcome().finished
        return self._report(observation, previous, progressed=progressed, again=again)

    def blocked(self, blocked: Blocked, previous: Mapping[str, Any]) -> Step:
        """The step's report when the search cannot go on for `blocked`'s reason (the runtime's own
        errors, such as a request the API server refused, come here too)."""
        engine = self._engine
        outcome = engine.outcome() if engine is not None else RUNNING
        observation = Observation(engine.generation if engine else 0, outcome, blocked=blocked)
        return self._report(observation, previous, progressed=False)

    # ----------------------------------------------------------------- internals

    def _cross_check(self, engine: SearchEngine) -> CrossCheckView | None:
        return CrossCheckView.of(self.spec.scoring.cross_check, [*engine.told, *engine.validation_told])

    def _task(self, plan: ImagePlan, round: int = 0) -> EvaluationTask:
        """The task of a round of the engine's current phase, on the prompts its plan names."""
        if not plan.held_out:
            prompts = self.prompts()
            if plan.generation == 0 and self.spec.validation is not None:
                _refuse_overlap(prompts, self.validation_prompts())  # the start: before anything runs
            return plan.task(self.name, self.spec, prompts, self.save_images, round)
        prompts = self.validation_prompts()
        if plan.per_prompt and len(prompts) > VALIDATION_PROMPTS_LIMIT:
            raise PromptsUnavailableError(
                f"the held-out prompts are {len(prompts)}: at most {VALIDATION_PROMPTS_LIMIT} fit one "
                "worker's report; give fewer in spec.validation.prompts"
            )
        _refuse_overlap(self.prompts(), prompts)
        return plan.task(self.name, self.spec, prompts, self.save_images, round)

    def _launch_next(self, launched_rounds: Sequence[EvaluationTask]) -> Launch | None:
        """Launch the engine's current generation or part, whose rounds so far are `launched_rounds`;
        None when it cannot be launched now. The next step launches it then, and reports why not:
        this step has results to archive and report first."""
        round = 1 + max((t.round for t in launched_rounds), default=-1)
        try:
            plan = self.engine.plan()
            task = self._task(plan, round=round)
            self.executor.launch(task)
        except Exception:  # the next step meets the same failure and reports it
            return None
        return Launch(len(task.candidates), task.shard_count, plan.detail)

    def _follow_up(self, tasks: Sequence[EvaluationTask], retry: dict[str, int]) -> EvaluationTask:
        """The next round, of the candidates in `retry` (id -> attempts used); its workers may retry
        as often as the candidate with the fewest attempts left still may."""
        last = tasks[-1]
        candidates = [c for c in last.candidates if c.candidate_id in retry]
        left = 1 + tasks[0].retries - max(retry.values())
        return last.model_copy(
            update={
                "candidates": candidates,
                "candidates_per_shard": min(last.candidates_per_shard, len(candidates)),
                "round": last.round + 1,
                "retries": max(0, left - 1),
            }
        )

    def _ingest(self, records: list[ArchiveRecord]) -> list[ArchiveRecord]:
        """Archive first, then the engine; the engine is told each record as it reads back from the
        archive's format, so a replay sees exactly what the live engine saw."""
        if not records:
            return []
        self.archive.append(records)
        told = [ArchiveRecord.from_line(record.to_line()) for record in records]
        for record in told:
            self.engine.tell(record.result, record.part, record.batch)
        return told

    def _release(self, generation: int) -> None:
        if generation not in self._released:
            self.executor.release(generation)
            self._released.add(generation)

    def _report(
        self, observation: Observation, previous: Mapping[str, Any], progressed: bool, again: bool = False
    ) -> Step:
        decision = decide(observation, previous)
        status = build_status(
            self._engine, decision, previous, self.observed_generation, running=observation.running
        )
        return Step(status, decision.events, progressed, decision.finished, observation, again)


RUNNING = Outcome(OutcomeState.RUNNING, OutcomeReason.RUNNING, "")


@dataclass
class Settlement:
    """What the rounds of a generation settle: records to ingest, candidates for a follow-up round."""

    records: list[ArchiveRecord] = field(default_factory=list)
    retry: dict[str, int] = field(default_factory=dict)  # candidate id -> attempts used so far


def settle(rounds: Sequence[tuple[EvaluationTask, Collected]], pending: set[str]) -> Settlement:
    """Pure: the pending candidates the rounds (in order) settle. A shard's own results count (a
    result for a candidate of another shard is ignored); a candidate whose latest round's shard
    settled without a result for it is failed if its shard was given up or its attempts
    (1 + the first round's retries) are spent, and otherwise retried in a follow-up round once
    every shard of the last round has settled."""
    settlement = Settlement()
    recorded: dict[str, ArchiveRecord] = {}
    attempts: dict[str, int] = {}
    latest: dict[str, tuple[int, int]] = {}  # candidate -> (position of its latest round, its shard)
    for position, (task, collected) in enumerate(rounds):
        for index in range(task.shard_count):
            members = task.members(index)
            for candidate_id in members:
                latest[candidate_id] = (position, index)
            outcome = collected.shards.get(index)
            if outcome is None:
                continue
            for result in outcome.results:
                candidate_id = result.candidate_id
                if candidate_id in pending and candidate_id in members and candidate_id not in recorded:
                    recorded[candidate_id] = ArchiveRecord(generation=task.generation, result=result)
            for candidate_id in members - {r.candidate_id for r in outcome.results}:
                attempts[candidate_id] = attempts.get(candidate_id, 0) + outcome.attempts
    last = len(rounds) - 1
    last_settled = len(rounds[last][1].shards) == rounds[last][0].shard_count
    budget = 1 + rounds[0][0].retries
    for candidate_id, (position, index) in latest.items():
        if candidate_id not in pending or candidate_id in recorded:
            continue
        task, collected = rounds[position]
        outcome = collected.shards.get(index)
        if outcome is None:
            continue  # still running
        used = attempts.get(candidate_id, 0)
        if outcome.final or used >= budget or position != last:
            reason = outcome.failure or f"shard {index}: the worker reported no result for this candidate"
            failure = EvaluationResult.failed(candidate_id, reason[:REASON_LIMIT])
            recorded[candidate_id] = ArchiveRecord(generation=task.generation, result=failure)
        elif last_settled:
            settlement.retry[candidate_id] = used
    order = {c.candidate_id: (t.round, i) for t, _ in reversed(rounds) for i, c in enumerate(t.candidates)}
    settlement.records = sorted(recorded.values(), key=lambda r: order[r.candidate_id])
    return settlement


def report_outcome(task: EvaluationTask, shard: int, message: str, attempts: int) -> ShardOutcome:
    """What the report of a worker run that exited 0 settles for its shard: the results it holds for
    the shard's own candidates, and why the others have none (an unusable or partial report, or a
    fatal error the worker named although it exited 0). Both executors read reports here."""
    members = task.members(shard)
    try:
        report = decode_report(message, generation=task.generation, shard=shard, members=members)
    except ReportError as error:
        return ShardOutcome(failure=f"shard {shard}: unusable worker report ({error})", attempts=attempts)
    failure = None
    if report.fatal:
        failure = f"shard {shard}: {report.fatal}"
    elif members - {r.candidate_id for r in report.results}:
        failure = f"shard {shard}: the worker's report has no result for this candidate"
    return ShardOutcome(
        results=[_counted(task, shard, r) for r in report.results], failure=failure, attempts=attempts
    )


def _counted(task: EvaluationTask, shard: int, result: EvaluationResult) -> EvaluationResult:
    """The result, or its failure when it rests on other images than the task asked for (a part
    of a screened candidate merges by its counts, so a wrong count would corrupt the merge)."""
    expected = len(task.prompts) * task.images_per_prompt
    if result.metrics is None or result.metrics.images == expected:
        return result
    reported = result.metrics.images
    reason = f"shard {shard}: the worker reported {reported} images where the task asked for {expected}"
    return EvaluationResult.failed(result.candidate_id, reason[:REASON_LIMIT])


def _task_mismatch(tasks: Sequence[EvaluationTask], plan: ImagePlan) -> str | None:
    """Why the launched tasks do not hold the current phase's candidates, if they do not."""
    expected = {c.candidate_id for c in plan.candidates}
    launched = {c.candidate_id for c in tasks[0].candidates}
    if launched != expected:
        return (
            f"the running Job of generation {plan.generation} holds candidates "
            f"{sorted(launched - expected)[:3]} that a replay of the archive does not ask for"
        )
    for task in tasks[1:]:
        stray = {c.candidate_id for c in task.candidates} - expected
        if stray:
            unknown = sorted(stray)[:3]
            return f"round {task.round} of generation {plan.generation} holds unknown candidates {unknown}"
    return None


def _refuse_overlap(search: Sequence[str], held_out: Sequence[str]) -> None:
    overlap = first_overlap(search, held_out)
    if overlap is not None:
        raise PromptsOverlapError(f"spec.validation.prompts: {overlap_message(overlap)}")


def _no_validation_prompts() -> list[str]:
    raise PromptsUnavailableError("no held-out prompts are given (spec.validation.prompts)")


def replay_advice(problem: str) -> str:
    return (
        f"the archive cannot be replayed as written: {problem}. It was written by another version of "
        "the search engine or for another spec; run the operator version that wrote it (the archive "
        "records name it), or delete and recreate the SustainSearch to start over"
    )
