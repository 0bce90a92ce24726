"""Pure construction of a search's `.status` from the engine and the step's decision, capped so it
stays small at any scale. Both runtimes write what this returns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sustaindiffusion.api.agreement import Agreement
from sustaindiffusion.api.objectives import OBJECTIVES
from sustaindiffusion.api.results import Metrics
from sustaindiffusion.api.status import (
    Baseline,
    Condition,
    ConditionStatus,
    EnergyTotals,
    EvaluationCounters,
    FrontEntry,
    HeldOutValue,
    Interval,
    ScreeningStatus,
    SustainSearchStatus,
    ValidationPoint,
    ValidationStatus,
)
from sustaindiffusion.search.decisions import ConditionUpdate, Decision
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.heldout import held_out
from sustaindiffusion.search.prompt_counts import verdict
from sustaindiffusion.search.reference import FrontPoint


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    engine: SearchEngine | None,
    decision: Decision,
    previous: Mapping[str, Any],
    observed_generation: int,
    running: int = 0,
) -> SustainSearchStatus:
    """The status after a step: `previous` (the stored status) keeps its start time and the
    transition times of conditions that did not change; `engine` is None for a spec it cannot run."""
    conditions = merge_conditions(previous.get("conditions") or [], decision.conditions, observed_generation)
    start = previous.get("startTime") or now()
    completion = (previous.get("completionTime") or now()) if decision.finished else None
    if engine is None:
        return SustainSearchStatus(
            phase=decision.phase,
            conditions=conditions,
            observed_generation=observed_generation,
            message=decision.message,
            start_time=start,
            completion_time=completion,
        )
    spec = engine.spec
    front = engine.front()
    capped = cap_front(front, spec.reporting.max_front_entries)
    planned = spec.algorithm.generations
    done_generations = max(0, engine.generation - 1)  # NSGA-II generations completed (0 is the baseline)
    baselines = [
        Baseline(
            name=candidate.baseline or "",
            candidate_id=candidate.candidate_id,
            objectives={o.name.value: result.metrics.objective(o.name) for o in spec.objectives},
            quality=result.metrics.quality,
            valid_share=result.metrics.valid_share,
            device=result.device.name if result.device else None,
        )
        for candidate, result in engine.baselines()
        if result is not None and result.metrics is not None
    ]
    defaults = defaults_reference(engine)
    told = [*engine.told, *engine.validation_told]
    devices = engine.ledger.devices()
    gpu, cpu = engine.ledger.energy_joules()
    return SustainSearchStatus(
        phase=decision.phase,
        conditions=conditions,
        observed_generation=observed_generation,
        generation=engine.generation,
        generation_progress=f"{min(done_generations, planned)}/{planned}",
        evaluations=EvaluationCounters(
            total=engine.evaluations + running,
            succeeded=engine.evaluations - engine.failures,
            failed=engine.failures,
            running=running,
        ),
        front=[
            FrontEntry(
                candidate_id=point.candidate.candidate_id,
                settings=point.candidate.settings,
                objectives=point.objectives,
                change_percent=change_against(point.objectives, defaults),
                quality=point.metrics.quality,
                images=point.metrics.images or None,
                intervals=front_intervals(point) or None,
                valid_share=point.metrics.valid_share,
                cross_check_disagreement=_disagreement(point.metrics),
                device=point.device,
                constraint_satisfied=True,
            )
            for point in capped
        ],
        front_size=len(front),
        hypervolume=engine.hypervolume_history[-1] if engine.hypervolume_history else None,
        baselines=baselines or None,
        energy=EnergyTotals(
            total_joules=engine.total_energy_joules,
            gpu_joules=gpu,
            cpu_joules=cpu,
            estimated=any(r.metrics.energy_estimated for r in told if r.metrics is not None),
            attributable=all(r.device.attributable for r in told if r.device is not None),
        ),
        screening=screening_status(engine),
        quality_threshold=engine.quality_threshold,
        devices=devices or None,
        validation=validation_status(engine),
        start_time=start,
        completion_time=completion,
        message=decision.message,
    )


def screening_status(engine: SearchEngine) -> ScreeningStatus | None:
    tally = engine.screening_tally()
    if tally is None:
        return None
    return ScreeningStatus(
        screened=tally.screened,
        screened_out=tally.screened_out,
        incomplete=tally.incomplete,
        images_saved=tally.images_saved,
    )


def credible_intervals(metrics: Metrics, key: str, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """The `level` intervals of the objectives whose evidence carries one (the biases that rest on
    answers: none for results without counts, or with no mapped answer, where a bias is 1 by rule),
    in registry order; `key` (the candidate id) seeds the draws, so they are the same on every replay."""
    intervals = {}
    for name, info in OBJECTIVES.items():
        interval = info.bound.credible(metrics, info.metric, key, level)
        if interval is not None:
            intervals[name.value] = interval
    return intervals


def front_intervals(point: FrontPoint) -> dict[str, Interval]:
    """The 95% intervals of the point's objectives that have one (its biases)."""
    intervals = credible_intervals(point.metrics, point.candidate.candidate_id)
    return {
        name: Interval(low=low, high=high)
        for name, (low, high) in intervals.items()
        if name in point.objectives
    }


def _disagreement(metrics: Metrics) -> float | None:
    agreement = Agreement.of(metrics)
    return round(agreement.disagreement, 4) if agreement and agreement.disagreement is not None else None


def defaults_reference(engine: SearchEngine) -> dict[str, float] | None:
    """The defaults' objective values that changes are taken against: those resting on evidence
    (a bias without one mapped answer is 1 by rule; "-60% against it" would claim a measurement)."""
    metrics = engine.defaults_metrics()
    if metrics is None:
        return None
    return {
        o.name.value: metrics.objective(o.name)
        for o in engine.spec.objectives
        if metrics.has_evidence(o.name)
    }


def change_against(
    objectives: Mapping[str, float], defaults: Mapping[str, float] | None
) -> dict[str, float] | None:
    """Each objective's change against the defaults' value, in % (left out where that is 0 or
    missing)."""
    if defaults is None:
        return None
    return {
        name: (value - defaults[name]) / abs(defaults[name]) * 100
        for name, value in objectives.items()
        if defaults.get(name)
    }


def validation_status(engine: SearchEngine) -> ValidationStatus | None:
    """The held-out results of the validated points so far, each against the defaults'."""
    validation, spec = engine.validation(), engine.spec.validation
    if not validation or spec is None:
        return None
    defaults = validation[0][1]
    baseline = defaults.per_prompt if defaults is not None and defaults.ok else None
    points = []
    for candidate, result in validation:
        point = ValidationPoint(candidate_id=candidate.candidate_id, role=candidate.role or "")
        in_sample = engine.result(candidate.candidate_id)
        if in_sample is not None and in_sample.metrics is not None:
            point.in_sample = {
                o.name.value: in_sample.metrics.objective(o.name) for o in engine.spec.objectives
            }
        if result is not None and not result.ok:
            point.reason = result.reason
        elif result is not None and result.metrics is not None and result.per_prompt and baseline:
            stats = held_out(engine.spec.objectives, result.per_prompt, baseline, seed=spec.seed)
            point.objectives = {name: HeldOutValue(**vars(value)) for name, value in stats.objectives.items()}
            point.wins, point.pareto, point.losses = stats.wins, stats.pareto, stats.losses
            counts = verdict(stats.wins, stats.pareto, stats.losses)
            point.sign_test_p, point.conclusion = counts.p_value, counts.line()[:512]
            point.valid_share = result.metrics.valid_share
        points.append(point)
    prompts = len(baseline) if baseline else 0
    return ValidationStatus(
        prompts=prompts,
        images_per_prompt=spec.images_per_prompt,
        complete=all(result is not None for _, result in validation),
        points=points,
    )
