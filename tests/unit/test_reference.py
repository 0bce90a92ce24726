"""The reference the defaults fix: nothing before them, scales and threshold after, feasibility,
what NSGA-II is told, and the front of the generations before a given one."""

from __future__ import annotations

import pytest

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.results import Device, EvaluationResult
from sustaindiffusion.search.ledger import Candidate, Ledger
from sustaindiffusion.search.reference import FAILURE_VIOLATION, Reference
from tests.support.engine_runs import make_spec
from tests.support.fake_evaluator import fake_evaluate, fake_metrics

SPEC = make_spec(constraints={"sameDevice": True})
DEFAULTS = Candidate(CandidateSettings().candidate_id(), 0, CandidateSettings(), baseline="defaults")


def test_before_the_defaults_there_is_no_front_and_no_scale() -> None:
    reference = Reference(SPEC)
    assert not reference.fixed
    assert reference.front(Ledger()) == []
    assert reference.hypervolume(Ledger()) == 0.0
    with pytest.raises(RuntimeError, match="objective scales"):
        reference.normalised({"GenderBias": 0.5, "EthnicBias": 0.5, "Energy": 1.0})


def test_failed_defaults_fix_nothing_and_evaluated_ones_fix_threshold_scale_and_device() -> None:
    assert Reference.of_defaults(SPEC, EvaluationResult.failed(DEFAULTS.candidate_id, "OOM")) is None
    defaults = fake_evaluate(DEFAULTS).model_copy(update={"device": Device(name="H100")})
    reference = Reference.of_defaults(SPEC, defaults)
    assert reference is not None
    assert reference.fixed
    assert reference.quality_threshold == pytest.approx(0.95 * fake_metrics(CandidateSettings()).quality)
    assert reference.defaults_device == "H100"
    energy = fake_metrics(CandidateSettings()).energy_joules_per_image
    assert reference.normalised({"GenderBias": 0.5, "EthnicBias": 0.0, "Energy": energy}) == [0.5, 0.0, 0.5]


def test_nsga_is_told_minimised_values_and_a_failure_far_behind_every_result() -> None:
    reference = Reference.of_defaults(SPEC, fake_evaluate(DEFAULTS))
    assert reference is not None
    candidate = Candidate("a" * 16, 1, CandidateSettings(inference_steps=20))
    result = fake_evaluate(candidate)
    assert reference.told_values(result) == (
        reference.minimised(fake_metrics(candidate.settings)),
        reference.constraint_values(result),
    )
    failed_objectives, failed_constraints = reference.told_values(EvaluationResult.failed("a" * 16, "x"))
    assert failed_objectives == [0.0, 0.0, 0.0]
    assert failed_constraints[0] == FAILURE_VIOLATION


def test_the_front_of_the_generations_before_one_leaves_later_points_out() -> None:
    spec = make_spec(constraints={"quality": {"enabled": False}})
    reference = Reference.of_defaults(spec, fake_evaluate(DEFAULTS))
    assert reference is not None
    ledger = Ledger()
    early, late = (
        Candidate(
            CandidateSettings(inference_steps=s).candidate_id(), g, CandidateSettings(inference_steps=s)
        )
        for s, g in ((20, 1), (10, 2))
    )
    for candidate in (early, late):
        ledger.remember(candidate)
        ledger.join_search(candidate.candidate_id, candidate.generation)
        ledger.record(fake_evaluate(candidate), candidate.generation, 4)
    assert late.candidate_id in {p.candidate.candidate_id for p in reference.front(ledger)}
    assert [p.candidate.candidate_id for p in reference.front(ledger, before=2)] == [early.candidate_id]
