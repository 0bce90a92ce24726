"""The adaptive evidence policy as a phase: sequential batches until no decision is open, a
candidate stopped short of a whole evaluation told to NSGA-II at its best plausible values and
never a front point, a candidate proposed again continuing on fresh images."""

from __future__ import annotations

from typing import Any

from sustaindiffusion.api.results import EvaluationResult, Screened
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.allocation import (
    Judged,
    bounds_per_decision,
    error_per_bound,
    judge,
    off_front,
)
from sustaindiffusion.search.phases import adaptive
from sustaindiffusion.search.phases.base import Context, ImagePlan
from tests.support.engine_runs import make_spec
from tests.support.phases import generation_context, planned_result, tell_all

WHOLE, BATCH = 8, 2


def spec_of(**adaptive_spec: Any) -> Any:
    return make_spec(
        prompts={"inline": ["p"], "imagesPerPrompt": WHOLE},
        algorithm={"adaptive": {"imagesPerPrompt": BATCH, "maxImagesPerPrompt": 12} | adaptive_spec},
    )


def run_to_the_end(context: Context) -> adaptive.AdaptiveEvidence:
    phase = adaptive.start(context)
    while not phase.done:
        tell_all(phase)
    return phase


def test_the_first_batch_gives_every_new_candidate_its_first_images() -> None:
    context = generation_context(spec_of(), 1)
    assert context.population is not None
    phase = adaptive.start(context)
    plan = phase.plan()
    assert (plan.part, plan.batch, plan.images_per_prompt) == (Part.BATCH, 0, BATCH)
    assert {c.candidate_id for c in phase.candidates()} == {
        c.candidate_id for c in context.population.candidates
    }
    assert all(plan.first_image_of(c.candidate_id) is None for c in phase.candidates())  # from image 0


def test_a_generation_ends_with_each_candidate_whole_or_stopped_out_at_its_best() -> None:
    context = generation_context(spec_of(), 2)
    assert context.population is not None
    run_to_the_end(context)
    ledger, reference = context.ledger, context.reference
    front = {p.candidate.candidate_id for p in reference.front(ledger)}
    stopped = 0
    for candidate in context.population.candidates:
        candidate_id = candidate.candidate_id
        result = ledger.result(candidate_id)
        assert result is not None
        images = ledger.images_per_prompt(candidate_id)
        assert images % BATCH == 0
        if result.screened is Screened.PARTIAL:
            stopped += 1
            assert images < WHOLE
            assert candidate_id not in front
            told = ledger.bounded(candidate_id)
            assert told is not None  # NSGA-II hears its best plausible values, not the estimate
            estimate = reference.told_values(result)[0]
            assert all(best <= value for best, value in zip(told[0], estimate, strict=True))
        else:
            assert result.screened is None
            assert images >= WHOLE
            assert ledger.bounded(candidate_id) is None
    assert stopped < len(context.population.candidates)


def test_a_candidate_proposed_again_continues_on_fresh_images() -> None:
    """A candidate stopped after 2 images in an earlier generation and asked again gets its next
    batch from image 2, and its result is the merge of all its images."""
    context = generation_context(spec_of(), 2)
    assert context.population is not None
    ledger = context.ledger
    again = context.population.candidates[0]
    assert ledger.result(again.candidate_id) is None
    first = planned_result(ImagePlan(Part.BATCH, 1, (again,), BATCH), again)
    ledger.remember(again)
    ledger.record(first.model_copy(update={"screened": Screened.PARTIAL}), 1, BATCH)
    phase = adaptive.start(context)
    assert again.candidate_id in {c.candidate_id for c in phase.candidates()}
    assert phase.plan().first_image_of(again.candidate_id) == BATCH
    while not phase.done:
        tell_all(phase)
    result = ledger.result(again.candidate_id)
    assert result is not None
    assert result.metrics is not None
    assert result.metrics.images == ledger.images_per_prompt(again.candidate_id) > BATCH


def test_a_failed_later_batch_leaves_a_stopped_candidate_incomplete() -> None:
    context = generation_context(spec_of(), 2)
    phase = adaptive.start(context)
    tell_all(phase)  # batch 0: every new candidate has 2 images
    assert phase.plan().batch == 1
    open_ones = [c for c in phase.pending() if context.ledger.images_per_prompt(c.candidate_id) < WHOLE]
    assert open_ones
    tell_all(phase, lambda plan, c: EvaluationResult.failed(c.candidate_id, "lost"))
    while not phase.done:
        tell_all(phase)
    for candidate in open_ones:
        result = context.ledger.result(candidate.candidate_id)
        assert result is not None
        assert result.screened is Screened.INCOMPLETE
        assert context.ledger.images_per_prompt(candidate.candidate_id) == BATCH


def test_the_optimistic_values_are_never_worse_than_the_estimate() -> None:
    context = generation_context(spec_of(), 2)
    run_to_the_end(context)
    for result in context.ledger.told:
        if result.metrics is None:
            continue
        judged = judge(result, context.reference, adaptive.measurement_of(context), 0.01)
        for best, estimate, worst in zip(judged.optimistic, judged.estimate, judged.pessimistic, strict=True):
            assert best <= estimate <= worst


def test_stopping_off_the_front_stops_only_candidates_a_front_point_beats_at_their_best() -> None:
    """`stopWhen: front`: a candidate stopped short is infeasible at its best, or a front point's
    estimate is at least as good as its best plausible values in every objective. Front points get
    no more images here (the cap is a whole evaluation), so their estimates are the ones the
    decisions saw, and a point that left the front did so for one that dominates it."""
    whole, batch = 40, 20
    spec = make_spec(
        prompts={"inline": ["p"], "imagesPerPrompt": whole},
        algorithm={
            "adaptive": {
                "imagesPerPrompt": batch,
                "maxImagesPerPrompt": whole,
                "stopWhen": "front",
                "error": 0.5,
            }
        },
    )
    context = generation_context(spec, 2)
    assert context.population is not None
    phase = run_to_the_end(context)
    ledger, reference = context.ledger, context.reference
    measurement = adaptive.measurement_of(context)
    front = [
        judge(ledger.result(p.candidate.candidate_id), reference, measurement, 0.5).estimate
        for p in reference.front(ledger)
    ]
    settings = context.spec.algorithm.adaptive
    assert settings is not None
    error = error_per_bound(settings.error, bounds_per_decision(reference), whole // batch - 1)
    stopped = 0
    for candidate in context.population.candidates:
        result = ledger.result(candidate.candidate_id)
        assert result is not None
        if result.screened is not Screened.PARTIAL:
            assert ledger.images_per_prompt(candidate.candidate_id) >= whole or not result.ok
            continue
        stopped += 1
        judged = judge(result, reference, measurement, error)
        assert not judged.feasible_at_best or off_front(judged, front)
    assert stopped  # at this error, some candidates stop after part of their images
    assert phase.done


def test_off_front_needs_one_front_point_at_least_as_good_in_every_objective() -> None:
    candidate = Judged(
        estimate=(0.5, 0.5, 0.5),
        optimistic=(0.3, 0.4, 0.2),
        pessimistic=(0.7, 0.6, 0.8),
        feasible=True,
        feasible_at_best=True,
        feasible_at_worst=True,
        constraints_at_best=(-1.0, -1.0),
    )
    assert off_front(candidate, [(0.3, 0.4, 0.2)])  # as good everywhere: a whole evaluation adds nothing
    assert off_front(candidate, [(0.9, 0.9, 0.9), (0.1, 0.1, 0.1)])
    assert not off_front(
        candidate, [(0.2, 0.3, 0.25), (0.35, 0.1, 0.1)]
    )  # each better somewhere, not everywhere
    assert not off_front(candidate, [])
