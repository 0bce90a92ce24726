"""A screened generation as a phase: the first k images of every new candidate, a decision once all
are told, then images k..n-1 for the survivors; what is final when, and what a replay sees."""

from __future__ import annotations

from typing import Any

import pytest

from sustaindiffusion.api.results import EvaluationResult, Screened
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.phases import screening
from tests.support.engine_runs import make_spec
from tests.support.phases import generation_context, planned_result, tell_all

FAILED = EvaluationResult.failed


def spec_of(**algorithm: Any) -> Any:
    return make_spec(
        prompts={"inline": ["p"], "imagesPerPrompt": 12},
        algorithm={"screening": {"imagesPerPrompt": 3}, "populationSize": 8, **algorithm},
    )


def screened_generation(generation: int = 3) -> tuple[Any, screening.Screening]:
    """A generation late enough for a full population to screen candidates out."""
    context = generation_context(spec_of(), generation)
    return context, screening.start(context)


def test_the_screening_pass_asks_every_new_candidate_for_its_first_images() -> None:
    context, phase = screened_generation(1)
    plan = phase.plan()
    assert (plan.part, plan.first_image, plan.images_per_prompt) == (Part.SCREEN, 0, 3)
    assert plan.detail == " (screening: images 0..2 of each prompt)"
    assert context.population is not None
    assert list(plan.candidates) == list(context.population.candidates)


def test_once_all_first_passes_are_told_the_screened_out_are_final_and_survivors_get_the_rest() -> None:
    context, phase = screened_generation()
    new = phase.candidates()
    tell_all(phase)
    ledger = context.ledger
    out = [c for c in new if (r := ledger.result(c.candidate_id)) is not None and r.screened is Screened.OUT]
    survivors = [c for c in new if ledger.result(c.candidate_id) is None]
    assert out, "a late generation screens some candidates out"
    assert survivors, "and keeps some"
    assert all(ledger.images_per_prompt(c.candidate_id) == 3 for c in out)
    assert phase.part is Part.REST
    assert phase.candidates() == survivors
    plan = phase.plan()
    assert (plan.part, plan.first_image, plan.images_per_prompt) == (Part.REST, 3, 9)
    assert plan.detail == " (the screening's survivors: images 3..11 of each prompt)"
    tell_all(phase)
    assert phase.done
    for candidate in survivors:
        result = ledger.result(candidate.candidate_id)
        assert result is not None
        assert result.metrics is not None
        assert (result.screened, result.metrics.images) == (Screened.COMPLETED, 12)
        assert ledger.images_per_prompt(candidate.candidate_id) == 12


def test_a_failed_first_pass_is_final_and_a_failed_rest_leaves_the_first_pass_incomplete() -> None:
    context, phase = screened_generation()
    new = phase.candidates()
    failing = new[0].candidate_id

    def first_pass(plan: Any, candidate: Any) -> EvaluationResult:
        return (
            FAILED(candidate.candidate_id, "OOM")
            if candidate.candidate_id == failing
            else planned_result(plan, candidate)
        )

    tell_all(phase, first_pass)
    assert context.ledger.result(failing) == FAILED(failing, "OOM")
    assert failing not in {c.candidate_id for c in phase.candidates()}
    tell_all(phase, lambda plan, candidate: FAILED(candidate.candidate_id, "lost"))
    for candidate in phase.candidates():
        result = context.ledger.result(candidate.candidate_id)
        assert result is not None
        assert result.metrics is not None
        assert result.screened is Screened.INCOMPLETE
        assert result.reason == "the rest of its images failed: lost"
        assert result.metrics.images == 3


def test_what_a_replay_sees_and_what_the_phase_refuses() -> None:
    context, phase = screened_generation()
    plan = phase.plan()
    first, *others = phase.pending()
    told = planned_result(plan, first)
    phase.tell(told)
    assert phase.told(first.candidate_id) == told  # the first pass as told
    with pytest.raises(ValueError, match="already has a screening result"):
        phase.tell(told)
    with pytest.raises(ValueError, match="is not pending in generation 3"):
        phase.tell(FAILED("0" * 16, "x"))
    for candidate in others:
        phase.tell(planned_result(plan, candidate))
    out = next(c for c in (first, *others) if context.ledger.result(c.candidate_id) is not None)
    with pytest.raises(ValueError, match="already has a result"):
        phase.tell(planned_result(plan, out))
    survivor = phase.pending()[0]
    rest = planned_result(phase.plan(), survivor)
    phase.tell(rest)
    assert phase.told(survivor.candidate_id) == rest
    assert context.ledger.told_as(Part.SCREEN, 3, survivor.candidate_id) is not None
    assert context.ledger.told_as(Part.REST, 3, survivor.candidate_id) == rest
