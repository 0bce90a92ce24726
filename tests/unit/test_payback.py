"""The search's energy bill and when a front point repays it: measured on the same images for the
point and the defaults (held-out when validated, else in-sample); never when nothing is saved."""

from __future__ import annotations

import math

from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.payback import Payback, payback
from tests.support.engine_runs import make_spec, run
from tests.support.fake_evaluator import fake_evaluate

VALIDATION = {"prompts": {"inline": ["held-out one", "held-out two"]}, "points": 2}


def energy(result: EvaluationResult | None) -> float:
    assert result is not None
    assert result.metrics is not None
    return result.metrics.energy_joules_per_image


def test_an_in_sample_payback_divides_the_bill_by_the_saving_against_the_defaults() -> None:
    cheap = {"inferenceSteps": {"min": 2, "max": 10}}  # fewer steps than the defaults' 28
    engine = SearchEngine(make_spec(searchSpace=cheap, constraints={"quality": {"enabled": False}}))
    run(engine)
    defaults = next(r for c, r in engine.baselines() if c.baseline == "defaults")
    cheapest = min(engine.front(), key=lambda p: p.metrics.energy_joules_per_image)
    bill = payback(engine, cheapest.candidate.candidate_id)
    saved = energy(defaults) - cheapest.metrics.energy_joules_per_image
    assert saved > 0
    assert bill == Payback(engine.total_energy_joules, saved, "in-sample")
    assert bill.images == math.ceil(engine.total_energy_joules / saved)
    assert f"after {bill.images:,} images" in bill.describe()
    assert bill.as_document()["images"] == bill.images


def test_a_validated_point_pays_back_on_its_held_out_images() -> None:
    def evaluate(candidate: Candidate) -> EvaluationResult:
        result = fake_evaluate(candidate)
        if candidate.role is None or result.metrics is None:
            return result
        # Held-out images cost more, the defaults' most: the saving differs from the in-sample one.
        factor = 3.0 if candidate.role == "defaults" else 1.5
        metrics = result.metrics.model_copy(
            update={"energy_joules_per_image": result.metrics.energy_joules_per_image * factor}
        )
        return EvaluationResult.succeeded(candidate.candidate_id, metrics)

    engine = SearchEngine(make_spec(validation=VALIDATION))
    while not engine.outcome().finished:
        for candidate in engine.ask():
            engine.tell(evaluate(candidate))
    validated = engine.validation()
    point, point_result = validated[1]
    bill = payback(engine, point.candidate_id)
    assert bill.basis == "held-out"
    assert bill.saved_joules_per_image == energy(validated[0][1]) - energy(point_result)
    assert bill.search_joules == engine.total_energy_joules  # validation included
    assert engine.total_energy_joules > SearchEngine.replay(make_spec(), engine.told).total_energy_joules


def test_a_point_that_saves_nothing_never_repays_and_an_unmeasured_one_says_so() -> None:
    never = Payback(search_joules=100.0, saved_joules_per_image=-2.0, basis="in-sample")
    assert never.images is None
    assert "never repays" in never.describe()
    assert Payback(100.0, 0.0, "held-out").images is None
    unmeasured = Payback(100.0, None, None)
    assert unmeasured.images is None
    assert "no energy measurement" in unmeasured.describe()
    engine = SearchEngine(make_spec())
    run(engine)
    assert payback(engine, "f" * 16).basis is None  # a candidate the search never evaluated
