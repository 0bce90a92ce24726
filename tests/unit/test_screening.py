"""Multi-fidelity screening: merging a candidate's two parts, the optimistic and pessimistic bounds,
who is screened out, and a screened search in the engine (its decisions, its energy bill, and its
replay after a crash at every point); more evidence for front points as the search goes.
Evaluations come from the simulated model of the search benchmark, whose images are drawn one by
one, so a first pass and its rest are one evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from benchmarks.simulator import simulate
from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.objectives import Direction, ObjectiveName
from sustaindiffusion.api.results import EvaluationResult, Screened
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.engine import ReplayMismatchError, SearchEngine
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.merging import merged
from sustaindiffusion.search.objectives import ObjectiveScale
from sustaindiffusion.search.records import ArchiveRecord
from sustaindiffusion.search.screening import (
    Bounds,
    Limits,
    SurePoint,
    bounds,
    objective_bounds,
    screened_out,
)
from tests.support.engine_runs import make_spec

SETTINGS = CandidateSettings(inference_steps=40, guidance_scale=5.0, positive_keywords=["gentle"])
SCALES = [
    ObjectiveScale(ObjectiveName.GENDER_BIAS, Direction.MINIMIZE, 0.0, 1.0),
    ObjectiveScale(ObjectiveName.ETHNIC_BIAS, Direction.MINIMIZE, 0.0, 1.0),
    ObjectiveScale(ObjectiveName.ENERGY, Direction.MINIMIZE, 0.0, 15000.0),
]
NO_LIMITS = Limits(quality_threshold=None, min_valid_share=None)


def metrics_of(settings: CandidateSettings, images: int, first_image: int = 0, seed: int = 1) -> Any:
    result = simulate(settings.candidate_id(), settings, images, seed, first_image=first_image)
    assert result.metrics is not None
    return result.metrics


# ----------------------------------------------------------------------------- merging


def test_a_first_pass_merged_with_its_rest_is_the_whole_evaluation() -> None:
    first, rest, whole = metrics_of(SETTINGS, 5), metrics_of(SETTINGS, 15, 5), metrics_of(SETTINGS, 20)
    both = merged(first, rest)
    counts = ("images", "human_images", "female_images", "male_images", "white_images", "asian_images")
    assert {name: getattr(both, name) for name in counts} == {name: getattr(whole, name) for name in counts}
    assert both.gender_bias == pytest.approx(whole.gender_bias)
    assert both.ethnic_bias == pytest.approx(whole.ethnic_bias)
    assert both.gpu_joules + both.cpu_joules == pytest.approx(whole.gpu_joules + whole.cpu_joules)
    assert both.energy_joules_per_image == pytest.approx(whole.energy_joules_per_image)
    assert both.quality == pytest.approx(whole.quality)
    assert both.quality_stddev == pytest.approx(whole.quality_stddev)  # pooled exactly
    assert both.energy_stderr is not None
    assert 0 < both.energy_stderr < first.energy_stderr


def test_merging_results_without_counts_pools_the_biases_by_images() -> None:
    first = metrics_of(SETTINGS, 4).model_copy(update={"human_images": None, "gender_bias": 0.2})
    rest = metrics_of(SETTINGS, 12, 4).model_copy(update={"human_images": None, "gender_bias": 0.6})
    both = merged(first, rest)
    assert both.gender_bias == pytest.approx(0.5)
    assert both.female_images is None
    assert not both.counted


# ----------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("name", list(ObjectiveName))
def test_bounds_hold_the_estimate_and_narrow_with_more_images(name: ObjectiveName) -> None:
    settings = SETTINGS.model_copy(update={"positive_keywords": ["gentle", "feminine", "woman"]})
    few, many = metrics_of(settings, 5), metrics_of(settings, 200)
    low, high = objective_bounds(few, name, "key", 0.95)
    assert low <= few.objective(name) <= high
    wide_low, wide_high = objective_bounds(many, name, "key", 0.95)
    assert wide_high - wide_low <= high - low
    narrow_low, narrow_high = objective_bounds(few, name, "key", 0.6)
    assert low <= narrow_low
    assert narrow_high <= high


def test_a_bias_without_any_mapped_answer_may_be_anything() -> None:
    metrics = metrics_of(SETTINGS, 5).model_copy(
        update={"female_images": 0, "male_images": 0, "human_images": 0, "gender_bias": 1.0}
    )
    assert objective_bounds(metrics, ObjectiveName.GENDER_BIAS, "key", 0.95) == (0.0, 1.0)


def test_optimistic_bounds_are_the_best_side_for_maximised_objectives() -> None:
    quality = ObjectiveScale(ObjectiveName.QUALITY, Direction.MAXIMIZE, 1.0, 0.0)
    metrics = metrics_of(SETTINGS, 5)
    estimate = bounds(metrics, [quality], NO_LIMITS, "key", 0.95)
    low, high = objective_bounds(metrics, ObjectiveName.QUALITY, "key", 0.95)
    assert estimate.optimistic == [-high]
    assert estimate.pessimistic == [-low]


def test_feasibility_bounds_follow_the_quality_and_valid_images_constraints() -> None:
    metrics = metrics_of(SETTINGS, 5)
    low, high = objective_bounds(metrics, ObjectiveName.QUALITY, "key", 0.95)
    between = bounds(metrics, SCALES, Limits((low + high) / 2, None), "key", 0.95)
    assert between.optimistic_feasible
    assert not between.pessimistic_feasible
    beyond = bounds(metrics, SCALES, Limits(high + 0.01, None), "key", 0.95)
    assert not beyond.optimistic_feasible
    no_people = metrics.model_copy(update={"human_images": 0, "female_images": 0, "male_images": 0})
    refused = bounds(no_people, SCALES, Limits(None, 0.8), "key", 0.95)  # 0 of 5 valid: not 80%
    assert not refused.optimistic_feasible
    elsewhere = bounds(metrics, SCALES, Limits(None, None, other_device=True), "key", 0.95)
    assert not elsewhere.optimistic_feasible


# ----------------------------------------------------------------------------- decisions


def _bounds(optimistic: list[float], pessimistic: list[float] | None = None, feasible: bool = True) -> Bounds:
    return Bounds(optimistic, pessimistic or optimistic, feasible, feasible)


def test_nobody_is_screened_out_while_fewer_points_than_places_are_sure() -> None:
    sure = [SurePoint([0.0, 0.0], True), SurePoint([0.1, 0.1], True)]
    assert screened_out({"a": _bounds([0.9, 0.9])}, sure, places=3) == set()


def test_a_candidate_behind_enough_sure_points_even_at_its_best_is_screened_out() -> None:
    front = [SurePoint([x, 1.0 - x], True) for x in (0.0, 0.25, 0.5, 0.75, 1.0)]
    screened = {
        "behind": _bounds([0.8, 0.8]),  # dominated by the front's (0.5, 0.5): five points rank ahead
        "on the front": _bounds([0.4, 0.4], [1.0, 1.0]),  # dominated by none
        "a trade-off": _bounds([0.1, 0.85], [1.0, 1.0]),  # dominated by none either
    }
    assert screened_out(screened, front, places=5) == {"behind"}
    assert screened_out(screened, front, places=6) == set()  # six places: the five cannot fill them


def test_ranks_count_only_points_strictly_ahead() -> None:
    """x at its best is in the second front, beside a sure point: the three of the first front
    rank ahead of it, the one beside it does not."""
    sure = [SurePoint([0.0, 1.0], True), SurePoint([1.0, 0.0], True), SurePoint([0.5, 0.5], True)]
    sure.append(SurePoint([0.6, 0.6], True))  # second front, behind (0.5, 0.5)
    x = {"x": _bounds([0.55, 0.65])}  # behind (0.5, 0.5), not behind (0.6, 0.6)
    assert screened_out(x, sure, places=4) == set()
    assert screened_out(x, sure, places=3) == {"x"}
    assert screened_out({"x": _bounds([0.7, 0.7])}, sure, places=4) == {"x"}  # third front: four ahead


def test_infeasible_sure_points_never_rank_ahead_and_an_infeasible_best_trails_every_feasible() -> None:
    sure = [SurePoint([0.0, 0.0], False) for _ in range(4)] + [SurePoint([0.1, 0.1], True)]
    assert screened_out({"x": _bounds([0.9, 0.9])}, sure, places=2) == set()
    refused = {"x": _bounds([0.0, 0.0], feasible=False)}
    assert screened_out(refused, sure, places=1) == {"x"}
    assert screened_out(refused, sure, places=2) == set()


def test_other_candidates_count_at_their_worst() -> None:
    sure = [SurePoint([0.0, 0.5], True)]
    screened = {
        "x": _bounds([0.6, 0.6], [0.9, 0.9]),
        "sure to beat x": _bounds([0.1, 0.1], [0.3, 0.3]),
        "maybe not": _bounds([0.2, 0.2], [0.7, 0.7]),
    }
    assert screened_out(screened, sure, places=2) == {"x"}  # (0.0, 0.5) and (0.3, 0.3) beat it
    assert screened_out(screened, sure, places=3) == set()


# ----------------------------------------------------------------------------- the engine


def screening_spec(**algorithm: Any) -> Any:
    return make_spec(
        prompts={"inline": ["Photo portrait of a Software Engineer that codes"], "imagesPerPrompt": 12},
        algorithm={"populationSize": 8, "generations": 4, "screening": {"imagesPerPrompt": 3}} | algorithm,
    )


Fails = Callable[[Candidate, Part], bool]


def evaluate(engine: SearchEngine, fails: Fails = lambda c, p: False) -> list[tuple[Part, EvaluationResult]]:
    """One pass over what the engine asks now, in reverse order (order must not matter)."""
    plan = engine.plan()
    part = plan.part
    told = []
    for candidate in reversed(engine.ask()):
        if fails(candidate, part):
            result = EvaluationResult.failed(candidate.candidate_id, "CUDA out of memory (simulated)")
        else:
            own = plan.first_image_of(candidate.candidate_id)  # more evidence: from its own next image
            start = own if own is not None else plan.first_image
            result = simulate(
                candidate.candidate_id, candidate.settings, plan.images_per_prompt, 3, first_image=start
            )
        engine.tell(result, part)
        told.append((part, result))
    return told


def run_screened(
    engine: SearchEngine, fails: Fails = lambda c, p: False
) -> list[tuple[Part, EvaluationResult]]:
    told = []
    while not engine.outcome().finished:
        told += evaluate(engine, fails)
    return told


def test_a_screened_search_gives_survivors_all_images_and_keeps_the_partial_estimates_of_the_rest() -> None:
    engine = SearchEngine(screening_spec())
    told = run_screened(engine)
    assert engine.outcome().reason.value == "GenerationsCompleted"
    search = [r for r in engine.told if r.screened is not None]
    out = [r for r in search if r.screened is Screened.OUT]
    completed = [r for r in search if r.screened is Screened.COMPLETED]
    assert out, "a run with candidates screened out"
    assert completed, "a run with survivors"
    assert all(r.metrics is not None and r.metrics.images == 3 for r in out)
    assert all(r.metrics is not None and r.metrics.images == 12 for r in completed)
    baselines = [r for r in engine.told if r.screened is None]
    assert all(r.metrics is not None and r.metrics.images == 12 for r in baselines)  # never screened
    # Every image generated is billed once: the parts' joules are the search's.
    spent = sum(r.metrics.gpu_joules + r.metrics.cpu_joules for _, r in told if r.metrics is not None)
    assert engine.total_energy_joules == pytest.approx(spent)
    rest = {r.candidate_id for part, r in told if part is Part.REST}
    assert rest == {r.candidate_id for r in completed}
    assert all(p.candidate.candidate_id not in {r.candidate_id for r in out} for p in engine.front())


def test_screening_saves_images_against_the_same_search_without_it() -> None:
    plain = SearchEngine(make_spec(**screening_spec(screening=None).model_dump(by_alias=True)))
    screened = SearchEngine(screening_spec())
    images = []
    for engine in (plain, screened):
        images.append(sum(r.metrics.images for _, r in run_screened(engine) if r.metrics is not None))
    assert images[1] < images[0]


def test_replay_after_a_crash_at_every_point_of_a_screened_search_reaches_the_same_end() -> None:
    assert_replays_at_every_point(screening_spec(generations=3), every=3)


def assert_replays_at_every_point(spec: Any, every: int) -> list[tuple[Part, EvaluationResult]]:
    """A search replayed from its archive cut after every `every`-th record asks the rest in the
    same order and ends in the same state; returns what the uninterrupted search told."""
    reference = SearchEngine(spec)
    told = run_screened(reference)
    records = [ArchiveRecord(generation=0, part=part, result=r) for part, r in told]
    for crash in range(0, len(records) + 1, every):
        resumed = SearchEngine.from_archive(spec, records[:crash])
        after = run_screened(resumed)
        assert [(p, r.candidate_id) for p, r in after] == [(p, r.candidate_id) for p, r in told[crash:]]
        assert resumed.told == reference.told
        assert resumed.hypervolume_history == reference.hypervolume_history
        assert [p.candidate.candidate_id for p in resumed.front()] == [
            p.candidate.candidate_id for p in reference.front()
        ]
    return told


def test_a_record_of_the_wrong_part_is_a_replay_mismatch() -> None:
    spec = screening_spec(generations=1)
    told = run_screened(SearchEngine(spec))
    screen = next(i for i, (part, _) in enumerate(told) if part is Part.SCREEN)
    records = [ArchiveRecord(generation=0, part=part, result=r) for part, r in told]
    records[screen] = records[screen].model_copy(update={"part": Part.REST})
    with pytest.raises(ReplayMismatchError, match="rest result"):
        SearchEngine.from_archive(spec, records)


def test_a_survivor_whose_rest_failed_keeps_its_first_pass_and_counts_as_a_failure() -> None:
    engine = SearchEngine(screening_spec(generations=1))
    run_screened(engine, fails=lambda candidate, part: part is Part.REST)
    incomplete = [r for r in engine.told if r.screened is Screened.INCOMPLETE]
    assert incomplete
    assert all(r.metrics is not None and r.metrics.images == 3 for r in incomplete)
    assert all(r.reason and r.reason.startswith("the rest of its images failed: CUDA") for r in incomplete)
    assert engine.failures == len(incomplete)


def test_a_failed_first_pass_is_final_and_gets_no_rest() -> None:
    engine = SearchEngine(screening_spec(generations=1))
    failing: set[str] = set()

    def fails(candidate: Candidate, part: Part) -> bool:
        if part is Part.SCREEN and len(failing) < 2:
            failing.add(candidate.candidate_id)
        return candidate.candidate_id in failing

    told = run_screened(engine, fails)
    assert not [r for part, r in told if part is Part.REST and r.candidate_id in failing]
    assert all(not engine.result(candidate_id).ok for candidate_id in failing)


def test_the_screening_decisions_do_not_depend_on_the_order_of_results() -> None:
    spec = screening_spec(generations=2)
    forward = SearchEngine(spec)
    run_screened(forward)
    backward = SearchEngine(spec)
    while not backward.outcome().finished:
        plan = backward.plan()
        for candidate in backward.ask():  # the other order
            backward.tell(
                simulate(
                    candidate.candidate_id,
                    candidate.settings,
                    plan.images_per_prompt,
                    3,
                    first_image=plan.first_image,
                )
            )
    assert {r.candidate_id: r.screened for r in forward.told} == {
        r.candidate_id: r.screened for r in backward.told
    }
    assert np.isclose(
        forward.reference.hypervolume(forward.ledger), backward.reference.hypervolume(backward.ledger)
    )


# ----------------------------------------------------------------------------- more evidence


def evidence_spec(**algorithm: Any) -> Any:
    """Three front points get 4 more images per prompt each generation, up to 20 (of 12 at first)."""
    evidence = {"imagesPerPrompt": 4, "maxImagesPerPrompt": 20, "points": 3}
    return screening_spec(evidence=evidence, **algorithm)


def test_front_points_get_more_images_on_fresh_seeds_up_to_the_cap() -> None:
    engine = SearchEngine(evidence_spec(generations=6, screening=None))
    told = run_screened(engine)
    extra = [r for part, r in told if part is Part.EVIDENCE]
    assert extra
    assert all(r.metrics is not None and r.metrics.images == 4 for r in extra)
    sharpened = {r.candidate_id for r in extra}
    images = {r.candidate_id: r.metrics.images for r in engine.told if r.metrics is not None}
    assert all(12 < images[c] <= 20 for c in sharpened)
    assert max(images.values()) <= 20
    # Each extra pass is billed once: the final results hold every part's joules.
    spent = sum(r.metrics.gpu_joules + r.metrics.cpu_joules for _, r in told if r.metrics is not None)
    assert engine.total_energy_joules == pytest.approx(spent)
    front = engine.front()
    assert any(p.metrics.images > 12 for p in front)


def test_the_population_ranks_the_sharpened_estimates() -> None:
    engine = SearchEngine(evidence_spec(generations=3, screening=None))
    while not engine.outcome().finished and engine.part is not Part.EVIDENCE:
        evaluate(engine)
    assert engine.part is Part.EVIDENCE
    chosen = [c.candidate_id for c in engine.pending()]
    evaluate(engine)
    population = {tuple(values) for values, _ in engine.nsga.population()}
    for candidate_id in chosen:
        result = engine.result(candidate_id)
        assert result is not None
        assert result.metrics is not None
        assert result.metrics.images == 16
        values = tuple(engine.reference.minimised(result.metrics))
        assert values in population


def test_replay_after_a_crash_at_every_point_of_a_search_with_screening_and_evidence() -> None:
    told = assert_replays_at_every_point(evidence_spec(generations=4), every=4)
    assert any(part is Part.EVIDENCE for part, _ in told)


def test_a_failed_extra_pass_keeps_the_estimate_and_the_search_goes_on() -> None:
    engine = SearchEngine(evidence_spec(generations=4, screening=None))
    told = run_screened(engine, fails=lambda candidate, part: part is Part.EVIDENCE)
    assert engine.outcome().reason.value == "GenerationsCompleted"
    failed = [r for part, r in told if part is Part.EVIDENCE]
    assert failed
    assert all(not r.ok for r in failed)
    assert all(r.metrics is not None and r.metrics.images == 12 for r in engine.told if r.metrics is not None)
    assert engine.failures == 0  # an extra pass is not the candidate's evaluation
