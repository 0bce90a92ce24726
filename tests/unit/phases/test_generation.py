"""A generation without screening: its new candidates whole; a candidate an earlier generation
evaluated keeps its result and is not asked again."""

from __future__ import annotations

import dataclasses

import pytest

from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.phases import generation
from sustaindiffusion.search.phases.base import WholeEvaluation
from sustaindiffusion.search.population import Population
from tests.support.engine_runs import make_spec
from tests.support.phases import generation_context, planned_result, tell_all


def test_every_new_candidate_is_asked_for_all_its_images() -> None:
    context = generation_context(make_spec(prompts={"inline": ["p"], "imagesPerPrompt": 5}))
    phase = generation.start(context)
    assert context.population is not None
    plan = phase.plan()
    assert (plan.part, plan.first_image, plan.images_per_prompt, plan.generation) == (Part.WHOLE, 0, 5, 1)
    assert list(plan.candidates) == list(context.population.candidates)
    tell_all(phase)
    assert phase.done
    assert all(context.ledger.evaluated_in(c.candidate_id) == 1 for c in context.population.candidates)


def test_a_candidate_evaluated_before_is_reused_not_asked() -> None:
    context = generation_context(make_spec())
    assert context.population is not None
    reused, *new = context.population.candidates
    context.ledger.record(planned_result(generation.start(context).plan(), reused), 0, 4)  # as if earlier
    phase = generation.start(context)
    assert reused not in phase.candidates()
    assert reused not in phase.pending()
    assert phase.candidates() == new
    with pytest.raises(ValueError, match="already has a result"):
        phase.tell(planned_result(phase.plan(), reused))


def test_a_population_of_reused_candidates_is_done_at_once() -> None:
    context = generation_context(make_spec())
    assert context.population is not None
    for candidate in context.population.candidates:
        context.ledger.record(EvaluationResult.failed(candidate.candidate_id, "earlier"), 0, 4)
    phase = generation.start(context)
    assert phase.done
    assert phase.candidates() == []
    assert phase.plan().candidates == ()


def test_it_needs_a_population() -> None:
    context = generation_context(make_spec())
    with pytest.raises(ValueError, match="population"):
        generation.start(dataclasses.replace(context, population=None))
    assert isinstance(generation.start(context), WholeEvaluation)
    assert isinstance(context.population, Population)
