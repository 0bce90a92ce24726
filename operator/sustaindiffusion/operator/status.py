"""Pure construction of a search's `.status` from the engine, capped so it stays small at any scale."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sustaindiffusion.api.status import (
    Baseline,
    Condition,
    ConditionStatus,
    EnergyTotals,
    EvaluationCounters,
    FrontEntry,
    Phase,
    SustainSearchStatus,
)
from sustaindiffusion.operator.engine.search import FrontPoint, SearchEngine

# Condition types (positive polarity, Kubernetes conventions).
PROGRESSING = "Progressing"
QUEUED = "Queued"
WORKERS_PENDING = "WorkersPending"
COMPLETE = "Complete"
FAILED = "Failed"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ConditionUpdate:
    type: str
    status: bool
    reason: str
    message: str = ""


@dataclass
class Observation:
    """What the reconciler saw beside the engine: phase decisions, conditions, times."""

    phase: Phase
    observed_generation: int
    running: int
    conditions: list[ConditionUpdate] = field(default_factory=list)
    message: str | None = None
    start_time: str | None = None
    completion_time: str | None = None


def cap_front(front: Sequence[FrontPoint], limit: int) -> list[FrontPoint]:
    """At most `limit` points, spread evenly along the first objective so the extremes stay."""
    ordered = sorted(front, key=lambda p: (next(iter(p.objectives.values())), p.candidate.candidate_id))
    if len(ordered) <= limit:
        return ordered
    if limit == 1:
        return ordered[:1]
    step = (len(ordered) - 1) / (limit - 1)
    return [ordered[round(i * step)] for i in range(limit)]


def merge_conditions(
    existing: Sequence[dict[str, Any]], updates: Sequence[ConditionUpdate], generation: int
) -> list[Condition]:
    """Conditions with lastTransitionTime kept unless the status actually changed."""
    by_type = {c["type"]: c for c in existing}
    merged = []
    for update in updates:
        status = ConditionStatus.TRUE if update.status else ConditionStatus.FALSE
        previous = by_type.get(update.type)
        unchanged = previous is not None and previous.get("status") == status.value
        merged.append(
            Condition(
                type=update.type,
                status=status,
                reason=update.reason,
                message=update.message[:32000],
                last_transition_time=previous["lastTransitionTime"] if unchanged and previous else now(),
                observed_generation=generation,
            )
        )
    return merged


def build_status(
    engine: SearchEngine,
    observation: Observation,
    existing_conditions: Sequence[dict[str, Any]],
    front_limit: int,
) -> SustainSearchStatus:
    spec = engine.spec
    front = engine.front() if engine.scales is not None else []
    capped = cap_front(front, front_limit)
    planned = spec.algorithm.generations
    done_generations = max(0, engine.generation - 1)  # NSGA-II generations completed (0 is the baseline)
    succeeded = engine.evaluations - engine.failures
    baselines = [
        Baseline(
            name=candidate.baseline or "",
            candidate_id=candidate.candidate_id,
            objectives={o.name.value: result.metrics.objective(o.name) for o in spec.objectives},
            quality=result.metrics.quality,
        )
        for candidate, result in engine.baselines()
        if result is not None and result.metrics is not None
    ]
    estimated = any(r.metrics is not None and r.metrics.energy_estimated for r in engine.told)
    gpu = sum(r.metrics.gpu_joules for r in engine.told if r.metrics is not None)
    cpu = sum(r.metrics.cpu_joules for r in engine.told if r.metrics is not None)
    return SustainSearchStatus(
        phase=observation.phase,
        conditions=merge_conditions(
            existing_conditions, observation.conditions, observation.observed_generation
        ),
        observed_generation=observation.observed_generation,
        generation=engine.generation,
        generation_progress=f"{min(done_generations, planned)}/{planned}",
        evaluations=EvaluationCounters(
            total=engine.evaluations + observation.running,
            succeeded=succeeded,
            failed=engine.failures,
            running=observation.running,
        ),
        front=[
            FrontEntry(
                candidate_id=point.candidate.candidate_id,
                settings=point.candidate.settings,
                objectives=point.objectives,
                quality=point.metrics.quality,
                constraint_satisfied=True,
            )
            for point in capped
        ],
        front_size=len(front),
        hypervolume=engine.hypervolume_history[-1] if engine.hypervolume_history else None,
        baselines=baselines or None,
        energy=EnergyTotals(total_joules=gpu + cpu, gpu_joules=gpu, cpu_joules=cpu, estimated=estimated),
        start_time=observation.start_time,
        completion_time=observation.completion_time,
        message=observation.message,
    )
