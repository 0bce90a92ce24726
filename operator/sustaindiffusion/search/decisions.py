"""Which phase, conditions and events follow from what a step of the loop observed: pure functions.

Input is an `Observation` (what the step saw and did) and the previous status as stored (a plain
dict, as read from the cluster or from status.json); output is a `Decision`. No I/O here: both
runtimes write the decision the same way, and every path is unit-tested on plain values.

Events are posted on transitions only (a condition turning True, a phase reached), so a level-
triggered loop that decides the same thing twice posts nothing new.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sustaindiffusion.api.agreement import Agreement, disagreeing
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import CrossCheck
from sustaindiffusion.api.status import Phase
from sustaindiffusion.search.outcome import Outcome, OutcomeReason, OutcomeState
from sustaindiffusion.search.records import ArchiveRecord

# Condition types (positive polarity, Kubernetes conventions).
PROGRESSING = "Progressing"
MIXED_DEVICES = "MixedDevices"
QUEUED = "Queued"
WORKERS_PENDING = "WorkersPending"
COMPLETE = "Complete"
FAILED = "Failed"
DETECTORS_DISAGREE = "DetectorsDisagree"  # only with a cross-check (spec.scoring.crossCheck)

NORMAL, WARNING = "Normal", "Warning"
SEARCH_FINISHED = "SearchFinished"  # the event of a search that succeeded
PROMPTS_UNAVAILABLE = "PromptsUnavailable"
PROMPTS_OVERLAP = "PromptsOverlap"  # held-out prompts that are search prompts
INVALID_SPEC = "InvalidSpec"
REPLAY_MISMATCH = "ReplayMismatch"


@dataclass(frozen=True)
class ConditionUpdate:
    type: str
    status: bool
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Launch:
    """A generation that this step started."""

    candidates: int
    shards: int
    detail: str = ""  # which images, when a screened generation evaluates part of them


@dataclass(frozen=True)
class Blocked:
    """The search cannot go on until something outside it changes: it waits (a missing prompts
    ConfigMap, a quota) or, when `fatal`, fails until its spec or the operator changes (a Job the
    API server refuses, an archive this engine cannot replay)."""

    reason: str
    message: str
    fatal: bool = False


@dataclass(frozen=True)
class CrossCheckView:
    """The cross-check of a search's results so far: which family checks, at what limit, how many
    results carry its counts, and those whose disagreement exceeds the limit (id, disagreement),
    most disagreeing first."""

    family: str
    max_disagreement: float
    checked: int
    disagreeing: Sequence[tuple[str, float]] = ()

    NAMED: ClassVar[int] = 10  # candidates the message names; the rest are counted

    @classmethod
    def of(cls, check: CrossCheck | None, results: Iterable[EvaluationResult]) -> CrossCheckView | None:
        """None without a cross-check."""
        if check is None:
            return None
        results = list(results)
        found = disagreeing(results, check.max_disagreement)
        return cls(
            family=check.family.value,
            max_disagreement=check.max_disagreement,
            checked=sum(1 for r in results if r.metrics is not None and Agreement.of(r.metrics) is not None),
            disagreeing=[(candidate, agreement.disagreement or 0.0) for candidate, agreement in found],
        )


@dataclass(frozen=True)
class Observation:
    """What one step of the loop saw and did."""

    generation: int  # the generation the step worked on
    outcome: Outcome  # the engine's outcome after the step
    candidates: int = 0  # candidates of the generation's task
    running: int = 0  # candidates being evaluated
    launched: Launch | None = None
    next_launched: Launch | None = None  # what comes next (a generation, a part), when it advanced
    retried: int = 0  # candidates this step put in a follow-up round (their report was unusable)
    ingested: Sequence[ArchiveRecord] = ()
    advanced: bool = False  # the generation completed in this step
    hypervolume: float | None = None  # after the generation, when it advanced
    queued: str | None = None  # why the generation's workers are held back by a queue
    queued_reason: str = "JobSuspended"
    workers_pending: str | None = None  # why started workers cannot run (unschedulable, image pull)
    workers_pending_reason: str = "PodPending"  # the condition's and the event's reason
    blocked: Blocked | None = None
    devices: Sequence[str] = ()  # the GPU models results were measured on so far
    cross_check: CrossCheckView | None = None  # the detectors' agreement so far, with a cross-check


@dataclass(frozen=True)
class Decision:
    phase: Phase
    conditions: list[ConditionUpdate]
    message: str
    events: list[Event] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.SUCCEEDED, Phase.FAILED)


def decide(observation: Observation, previous: Mapping[str, Any]) -> Decision:
    """The phase, conditions and events that follow from `observation`, given the stored status."""
    outcome = observation.outcome
    if outcome.finished:
        return _finished(outcome, observation, previous)
    events = _progress_events(observation)
    blocked = observation.blocked
    if blocked is not None and blocked.fatal:
        if not _condition(previous, FAILED, "True", blocked.reason):
            events.append(Event(WARNING, blocked.reason, blocked.message))
        return Decision(
            Phase.FAILED,
            [
                ConditionUpdate(PROGRESSING, False, blocked.reason, blocked.message),
                ConditionUpdate(COMPLETE, False, blocked.reason, blocked.message),
                ConditionUpdate(FAILED, True, blocked.reason, blocked.message),
            ],
            blocked.message,
            events,
        )
    if blocked is not None:
        if not _condition(previous, PROGRESSING, "False", blocked.reason):
            events.append(Event(WARNING, blocked.reason, blocked.message))
        return Decision(
            Phase.RUNNING,
            [ConditionUpdate(PROGRESSING, False, blocked.reason, blocked.message)],
            blocked.message,
            events,
        )
    generation = observation.generation + (1 if observation.advanced else 0)
    validating = outcome.reason is OutcomeReason.VALIDATING
    progress = outcome.message if validating else f"generation {generation}"
    conditions = [
        ConditionUpdate(PROGRESSING, True, "Validating" if validating else "GenerationRunning", progress)
    ]
    queued = None if observation.advanced else observation.queued
    pending = None if observation.advanced else observation.workers_pending
    conditions.append(
        ConditionUpdate(QUEUED, True, observation.queued_reason, queued)
        if queued
        else ConditionUpdate(QUEUED, False, "Admitted")
    )
    conditions.append(
        ConditionUpdate(WORKERS_PENDING, True, observation.workers_pending_reason, pending)
        if pending
        else ConditionUpdate(WORKERS_PENDING, False, "None")
    )
    if queued and not _condition(previous, QUEUED, "True"):
        events.append(Event(NORMAL, "Queued", f"generation {observation.generation} is queued: {queued}"))
    if pending and not _condition(previous, WORKERS_PENDING, "True", observation.workers_pending_reason):
        reason = observation.workers_pending_reason
        events.append(Event(WARNING, "WorkersPending" if reason == "PodPending" else reason, pending))
    conditions.append(_devices(observation, previous, events))
    conditions.extend(detectors_condition(observation.cross_check, previous, events))
    message = f"{progress}: {observation.running} candidates being evaluated"
    return Decision(Phase.RUNNING, conditions, message, events)


def invalid_spec(message: str, previous: Mapping[str, Any]) -> Decision:
    """A spec the engine cannot run (the API server's schema should have refused it)."""
    text = f"invalid spec: {message}"[:4000]
    events = [] if previous.get("phase") == Phase.FAILED.value else [Event(WARNING, INVALID_SPEC, text)]
    return Decision(Phase.FAILED, [ConditionUpdate(FAILED, True, INVALID_SPEC, text)], text, events)


def _finished(outcome: Outcome, observation: Observation, previous: Mapping[str, Any]) -> Decision:
    succeeded = outcome.state is OutcomeState.SUCCEEDED
    phase = Phase.SUCCEEDED if succeeded else Phase.FAILED
    reason = outcome.reason.value
    events = _progress_events(observation)
    if previous.get("phase") != phase.value:
        events.append(
            Event(NORMAL if succeeded else WARNING, SEARCH_FINISHED if succeeded else reason, outcome.message)
        )
    conditions = [
        ConditionUpdate(PROGRESSING, False, reason, outcome.message),
        ConditionUpdate(COMPLETE, succeeded, reason, outcome.message),
        ConditionUpdate(FAILED, not succeeded, reason, outcome.message),
        _devices(observation, previous, events),
        *detectors_condition(observation.cross_check, previous, events),
    ]
    return Decision(phase, conditions, outcome.message, events)


def detectors_condition(
    view: CrossCheckView | None, previous: Mapping[str, Any], events: list[Event]
) -> list[ConditionUpdate]:
    """DetectorsDisagree, with a cross-check only: True while some candidate's detectors disagree
    more than spec.scoring.crossCheck.maxDisagreement (the message names them, most disagreeing
    first), with a Warning event when it turns True."""
    if view is None:
        return []
    limit = f"{view.max_disagreement:.0%}"
    if not view.disagreeing:
        message = (
            f"{view.checked} candidates cross-checked by the {view.family} family: none disagrees with the "
            f"detector on more than {limit} of its images"
        )
        return [ConditionUpdate(DETECTORS_DISAGREE, False, "DetectorsAgree", message)]
    named = ", ".join(f"{candidate} ({share:.0%})" for candidate, share in view.disagreeing[: view.NAMED])
    more = len(view.disagreeing) - view.NAMED
    message = (
        f"the detector and its {view.family} cross-check disagree on more than {limit} of the images "
        f"(person gate, gender or ethnicity) of {len(view.disagreeing)} of {view.checked} candidates: "
        f"{named}{f' and {more} more' if more > 0 else ''}; their bias figures rest on answers the two "
        "detector families do not share"
    )
    if not _condition(previous, DETECTORS_DISAGREE, "True"):
        events.append(Event(WARNING, DETECTORS_DISAGREE, message))
    return [ConditionUpdate(DETECTORS_DISAGREE, True, "DetectorsDisagree", message)]


def _devices(observation: Observation, previous: Mapping[str, Any], events: list[Event]) -> ConditionUpdate:
    """Results from more than one GPU model: their energy and time are not comparable."""
    devices = sorted(set(observation.devices))
    if len(devices) < 2:
        return ConditionUpdate(MIXED_DEVICES, False, "OneDevice", devices[0] if devices else "")
    message = (
        f"results were measured on {len(devices)} GPU models ({', '.join(devices)}); energy and time "
        "compare only results from the defaults' model (spec.constraints.sameDevice)"
    )
    if not _condition(previous, MIXED_DEVICES, "True"):
        events.append(Event(WARNING, MIXED_DEVICES, message))
    return ConditionUpdate(MIXED_DEVICES, True, "SeveralDevices", message)


def _progress_events(observation: Observation) -> list[Event]:
    """What happened in the step itself: a generation started or finished, candidates failed."""
    events = []
    if observation.launched is not None:
        events.append(_started(observation.generation, observation.launched))
    if observation.retried:
        events.append(
            Event(
                WARNING,
                "CandidatesRetried",
                f"generation {observation.generation}: {observation.retried} candidates got no usable "
                "result from their worker; evaluating them again",
            )
        )
    for record in observation.ingested:
        if not record.result.ok:
            events.append(
                Event(WARNING, "CandidateFailed", f"candidate {record.candidate_id}: {record.result.reason}")
            )
    if observation.advanced:
        hypervolume = f"{observation.hypervolume:.4f}" if observation.hypervolume is not None else "n/a"
        events.append(
            Event(
                NORMAL,
                "GenerationFinished",
                f"generation {observation.generation} finished; hypervolume {hypervolume}",
            )
        )
    if observation.next_launched is not None:
        generation = observation.generation + (1 if observation.advanced else 0)
        events.append(_started(generation, observation.next_launched))
    return events


def _started(generation: int, launch: Launch) -> Event:
    return Event(
        NORMAL,
        "GenerationStarted",
        f"generation {generation}: {launch.candidates} candidates in {launch.shards} shards{launch.detail}",
    )


def _condition(status: Mapping[str, Any], kind: str, value: str, reason: str | None = None) -> bool:
    """Whether the stored status has condition `kind` at `value` (and `reason`, if given)."""
    return any(
        c.get("type") == kind and c.get("status") == value and (reason is None or c.get("reason") == reason)
        for c in status.get("conditions") or []
    )


SETTLED_REASONS = {r.value for r in OutcomeReason} - {OutcomeReason.RUNNING.value}


def needs_reconciling(status: Mapping[str, Any], generation: int) -> bool:
    """Whether a search may still have something to do. One that the engine finished (succeeded, or
    failed for a reason of its own) at the spec generation it has now does not: it needs no replay
    of its archive and no polling until its spec changes (a larger budget, say)."""
    if status.get("observedGeneration") != generation:
        return True
    if status.get("phase") not in (Phase.SUCCEEDED.value, Phase.FAILED.value):
        return True
    final = [
        c
        for c in status.get("conditions") or []
        if c.get("type") in (COMPLETE, FAILED) and c.get("status") == "True"
    ]
    return not final or final[0].get("reason") not in SETTLED_REASONS
