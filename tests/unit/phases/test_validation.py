"""Held-out validation as a phase: the defaults and chosen front points, on the held-out prompts with
their own seeds and stream, one per worker, results apart from the search's."""

from __future__ import annotations

import pytest

from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SeedPolicy
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.phases import validation
from sustaindiffusion.search.phases.base import Context
from sustaindiffusion.search.reference import DEFAULTS_ID
from tests.support.engine_runs import make_spec
from tests.support.phases import generation_context, tell_all

HELD_OUT = {"prompts": {"inline": ["one", "two", "three"]}, "points": 3, "imagesPerPrompt": 2, "seed": 9}


def end_of_search() -> Context:
    context = generation_context(make_spec(validation=HELD_OUT), 3)
    return Context(context.spec, 3, context.ledger, context.reference, context.nsga, context.encoding)


def test_none_without_the_spec() -> None:
    assert validation.start(generation_context(make_spec(), 2)) is None


def test_the_defaults_come_first_then_front_points_by_role() -> None:
    context = end_of_search()
    phase = validation.start(context)
    assert phase is not None
    chosen = phase.candidates()
    assert (chosen[0].candidate_id, chosen[0].role) == (DEFAULTS_ID, "defaults")
    assert chosen[1].role == "knee"
    assert 2 <= len(chosen) <= 4
    front = {p.candidate.candidate_id for p in context.reference.front(context.ledger)}
    assert {c.candidate_id for c in chosen[1:]} <= front
    assert all(c.generation == 3 for c in chosen)


def test_its_plan_is_held_out_prompts_own_seeds_and_stream_one_per_worker() -> None:
    phase = validation.start(end_of_search())
    assert phase is not None
    plan = phase.plan()
    assert plan.part is Part.VALIDATION
    assert (plan.held_out, plan.per_prompt) == (True, True)
    assert (plan.images_per_prompt, plan.first_image, plan.candidates_per_shard) == (2, 0, 1)
    assert (plan.seeds, plan.seed_stream) == (SeedPolicy(base=9), "validation")
    assert plan.part_on_tasks is Part.WHOLE  # workers from before this part read its tasks


def test_results_stay_apart_from_the_search() -> None:
    context = end_of_search()
    phase = validation.start(context)
    assert phase is not None
    told = list(context.ledger.told)
    tell_all(phase)
    assert phase.done
    assert context.ledger.told == told
    assert [r.candidate_id for r in context.ledger.validation_told] == [
        c.candidate_id for c in phase.candidates()
    ]
    assert all(result is not None for _, result in phase.results())
    with pytest.raises(ValueError, match="already has a validation result"):
        phase.tell(context.ledger.validation_told[0])
    with pytest.raises(ValueError, match="is not being validated"):
        phase.tell(EvaluationResult.failed("0" * 16, "x"))
