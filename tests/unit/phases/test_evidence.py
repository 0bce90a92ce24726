"""More evidence as a phase: which front points, their own next images, the sharpened estimates in
place, and NSGA-II's population revised with them."""

from __future__ import annotations

from typing import Any

import pytest

from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.phases import evidence
from tests.support.engine_runs import make_spec
from tests.support.phases import generation_context, tell_all


def spec_of(**evidence_spec: Any) -> Any:
    return make_spec(
        prompts={"inline": ["p"], "imagesPerPrompt": 12},
        algorithm={"evidence": {"imagesPerPrompt": 4, "maxImagesPerPrompt": 20, "points": 3} | evidence_spec},
    )


def test_there_is_none_before_generation_two_or_without_the_spec() -> None:
    assert evidence.start(generation_context(spec_of(), 1)) is None
    assert evidence.start(generation_context(make_spec(), 2)) is None


def test_the_front_points_with_the_fewest_images_get_more_from_their_own_next_index() -> None:
    context = generation_context(spec_of(), 2)
    phase = evidence.start(context)
    assert phase is not None
    front = {p.candidate.candidate_id for p in context.reference.front(context.ledger, before=2)}
    chosen = phase.candidates()
    assert 0 < len(chosen) <= 3
    assert {c.candidate_id for c in chosen} <= front
    assert all(c.generation == 2 for c in chosen)
    plan = phase.plan()
    assert (plan.part, plan.images_per_prompt) == (Part.EVIDENCE, 4)
    assert all(plan.first_image_of(c.candidate_id) == 12 for c in chosen)
    assert plan.detail == " (more evidence for front points: 4 more images per prompt each)"


def test_sharpened_estimates_replace_the_results_in_place_and_the_population_sees_them() -> None:
    context = generation_context(spec_of(), 2)
    phase = evidence.start(context)
    assert phase is not None
    ledger = context.ledger
    order = [r.candidate_id for r in ledger.told]
    tell_all(phase)
    assert phase.done
    assert [r.candidate_id for r in ledger.told] == order
    population = {tuple(values) for values, _ in context.nsga.population()}
    for candidate in phase.candidates():
        result = ledger.result(candidate.candidate_id)
        assert result is not None
        assert result.metrics is not None
        assert result.metrics.images == 16
        assert ledger.images_per_prompt(candidate.candidate_id) == 16
        assert tuple(context.reference.minimised(result.metrics)) in population


def test_a_failed_extra_pass_changes_nothing_and_a_point_is_sharpened_once_per_generation() -> None:
    context = generation_context(spec_of(), 2)
    phase = evidence.start(context)
    assert phase is not None
    before = {c.candidate_id: context.ledger.result(c.candidate_id) for c in phase.candidates()}
    tell_all(phase, lambda plan, c: EvaluationResult.failed(c.candidate_id, "lost"))
    assert {i: context.ledger.result(i) for i in before} == before
    assert all(context.ledger.images_per_prompt(i) == 12 for i in before)
    with pytest.raises(ValueError, match="already has its evidence of this generation"):
        phase.tell(EvaluationResult.failed(next(iter(before)), "lost"))


def test_points_at_the_cap_get_no_more() -> None:
    context = generation_context(spec_of(maxImagesPerPrompt=15), 2)
    assert evidence.start(context) is None  # 12 + 4 > 15
