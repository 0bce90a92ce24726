"""Generation 0: the defaults first, the spec's configurations in canonical form, equal ones once,
each evaluated whole and final."""

from __future__ import annotations

import pytest

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.ledger import Ledger
from sustaindiffusion.search.phases import baselines
from sustaindiffusion.search.phases.base import Context
from sustaindiffusion.search.reference import DEFAULTS_ID, Reference
from tests.support.engine_runs import make_spec
from tests.support.phases import planned_result, tell_all

CONFIGURATIONS = [
    {"name": "fast", "inferenceSteps": 20, "guidanceScale": 1.0, "negativeKeywords": ["lowres"]},
    {"name": "also-defaults"},  # the defaults again: one candidate
]


def context_of(**overrides: object) -> Context:
    spec = make_spec(prompts={"inline": ["p"], "imagesPerPrompt": 6}, **overrides)
    engine = SearchEngine(spec)  # only for its encoding and NSGA-II: the phase gets its own ledger
    return Context(spec, 0, Ledger(), Reference(spec), engine.nsga, engine.encoding)


def test_the_defaults_come_first_and_equal_configurations_are_one_candidate() -> None:
    context = context_of(baselines=CONFIGURATIONS)
    phase = baselines.start(context)
    candidates = phase.candidates()
    assert [(c.candidate_id, c.baseline) for c in candidates] == [
        (DEFAULTS_ID, "defaults"),
        (CandidateSettings(inference_steps=20, guidance_scale=1.0).candidate_id(), "fast"),  # canonical
    ]
    assert all(c.generation == 0 for c in candidates)
    assert [c.baseline for c in context.ledger.baselines()] == ["defaults", "fast"]


def test_each_baseline_is_evaluated_whole_once_and_the_phase_is_done_with_the_last() -> None:
    context = context_of(baselines=CONFIGURATIONS)
    phase = baselines.start(context)
    plan = phase.plan()
    assert (plan.part, plan.generation, plan.first_image, plan.images_per_prompt) == (Part.WHOLE, 0, 0, 6)
    assert (plan.held_out, plan.seed_stream) == (False, "")
    first, second = phase.pending()
    phase.tell(planned_result(plan, first))
    assert not phase.done
    assert [c.candidate_id for c in phase.pending()] == [second.candidate_id]
    with pytest.raises(ValueError, match="already has a result"):
        phase.tell(planned_result(plan, first))
    with pytest.raises(ValueError, match="is not pending in generation 0"):
        phase.tell(EvaluationResult.failed("0" * 16, "x"))
    phase.tell(planned_result(plan, second))
    assert phase.done
    assert context.ledger.images_per_prompt(first.candidate_id) == 6
    assert [r.candidate_id for r in context.ledger.told] == [first.candidate_id, second.candidate_id]
    assert phase.told(first.candidate_id) == context.ledger.result(first.candidate_id)


def test_legacy_ids_keep_configurations_as_written() -> None:
    spec = make_spec(baselines=CONFIGURATIONS[:1])
    engine = SearchEngine(spec, canonical_ids=False)
    context = Context(spec, 0, Ledger(), Reference(spec), engine.nsga, engine.encoding)
    fast = baselines.start(context).candidates()[1]
    assert fast.settings.negative_keywords == ["lowres"]
    tell_all(baselines.start(context))
