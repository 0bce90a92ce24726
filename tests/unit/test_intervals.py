"""The 95% intervals of the biases: as wide as 20 images make them, honest at the edges (all answers
in one group), the same on every replay, and in the status and the terminal table."""

from __future__ import annotations

import json

import pytest

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.intervals import ethnic_bias_interval, gender_bias_interval
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.status import Phase
from sustaindiffusion.search.decisions import ConditionUpdate, Decision
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.status import build_status, credible_intervals
from tests.support.fake_evaluator import fake_evaluate, fake_metrics


def test_gender_bias_at_parity_from_20_images_may_be_anything_up_to_about_0_4() -> None:
    low, high = gender_bias_interval(10, 10, "a")
    assert low == pytest.approx(0.0, abs=0.02)
    assert 0.3 < high < 0.5  # the standard deviation of a 20-image estimate is about 0.2
    narrow = gender_bias_interval(500, 500, "a")
    assert narrow[1] < 0.1


def test_all_answers_in_one_group_do_not_make_a_certain_value() -> None:
    low, high = gender_bias_interval(20, 0, "a")
    assert high == pytest.approx(1.0, abs=1e-3)
    assert low < 0.95  # Jeffreys' prior: 20 of 20 does not prove a share of exactly 1
    low, high = ethnic_bias_interval([20, 0, 0, 0], "a")
    assert high > 0.95
    assert low < 0.9
    balanced = ethnic_bias_interval([25, 25, 25, 25], "a")
    assert balanced[0] < 0.1 < balanced[1] < 0.35


def test_intervals_are_seeded_by_the_candidate_and_the_same_on_every_call() -> None:
    assert gender_bias_interval(7, 13, "abc") == gender_bias_interval(7, 13, "abc")
    assert ethnic_bias_interval([3, 4, 5, 8], "abc") == ethnic_bias_interval([3, 4, 5, 8], "abc")


def test_only_biases_that_rest_on_answers_get_an_interval() -> None:
    metrics = fake_metrics(CandidateSettings())
    assert credible_intervals(metrics, "a") == {}  # results without counts
    counted = metrics.model_copy(
        update={"human_images": 4, "female_images": 0, "male_images": 0, "white_images": 3}
        | {"asian_images": 1, "black_images": 0, "arab_images": 0}
    )
    assert set(credible_intervals(counted, "a")) == {"EthnicBias"}  # no gender answer mapped
    parity = metrics.model_copy(update={"gender_bias": 0.0, "human_images": 20, "female_images": 10})
    low, high = credible_intervals(parity.model_copy(update={"male_images": 10}), "a")["GenderBias"]
    assert low == 0.0  # the estimate itself, at the edge of the range, is inside
    assert high > 0.3


def test_the_status_front_carries_images_and_intervals_and_stays_small() -> None:
    spec = SustainSearchSpec.model_validate(
        {
            "prompts": {"inline": ["a portrait"]},
            "algorithm": {"populationSize": 64, "generations": 12, "seed": 3},
            "objectives": [{"name": "GenderBias"}, {"name": "EthnicBias"}, {"name": "Energy"}],
            "constraints": {"quality": {"enabled": False}},
        }
    )
    engine = SearchEngine(spec)
    while not engine.outcome().finished:
        for candidate in engine.ask():
            result = fake_evaluate(candidate)
            assert result.metrics is not None
            female = round(20 * (1 - result.metrics.gender_bias) / 2)
            counts = {"images": 20, "human_images": 20, "female_images": female, "male_images": 20 - female}
            counts |= {"white_images": 11, "asian_images": 3, "black_images": 3, "arab_images": 3}
            engine.tell(result.model_copy(update={"metrics": result.metrics.model_copy(update=counts)}))
    decision = Decision(Phase.SUCCEEDED, [ConditionUpdate("Complete", True, "SearchFinished", "done")], "")
    status = build_status(engine, decision, {}, observed_generation=1)
    front = status.front or []
    assert front
    for entry in front:
        assert entry.images == 20
        assert entry.intervals is not None
        assert set(entry.intervals) == {"GenderBias", "EthnicBias"}
        for name, interval in entry.intervals.items():
            assert interval.low <= entry.objectives[name] <= interval.high
    size = len(json.dumps(status.model_dump(mode="json", by_alias=True, exclude_none=True)).encode())
    assert size < 64 * 1024, f"status is {size} bytes with {len(front)} front entries"
