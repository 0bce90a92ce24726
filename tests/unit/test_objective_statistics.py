"""Every objective walked through every statistic its registry row names: merged across parts,
bounded from a partial evaluation, computed from held-out per-prompt rows, each agreeing with the
value of the whole evaluation; and a registry that lacks a row or a statistic refuses to load."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import pytest

from benchmarks.simulator import simulate
from sustaindiffusion.api import objectives
from sustaindiffusion.api.bias import ETHNIC_GROUPS, UNKNOWN_BIAS
from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.objectives import OBJECTIVES, ObjectiveInfo, ObjectiveName
from sustaindiffusion.api.results import Metrics, PromptStats
from sustaindiffusion.api.statistics import prompt_table
from sustaindiffusion.search.merging import merged

SETTINGS = CandidateSettings(inference_steps=40, guidance_scale=5.0, positive_keywords=["gentle", "woman"])
EVERY = pytest.mark.parametrize("name", list(ObjectiveName))


def metrics_of(images: int, first_image: int = 0) -> Metrics:
    result = simulate(SETTINGS.candidate_id(), SETTINGS, images, 1, first_image=first_image)
    assert result.metrics is not None
    return result.metrics


def row_of(metrics: Metrics) -> PromptStats:
    """One held-out prompt's row holding exactly `metrics`' images."""
    n = metrics.images
    fields = ("human_images", "female_images", "male_images", *(f"{g}_images" for g in ETHNIC_GROUPS))
    counts = {field: int(getattr(metrics, field) or 0) for field in fields}
    return PromptStats(
        images=n,
        quality_sum=metrics.quality * n,
        joules=metrics.energy_joules_per_image * n,
        seconds=metrics.seconds_per_image * n,
        **counts,
    )


@EVERY
def test_a_merge_of_two_parts_is_the_value_of_the_whole_evaluation(name: ObjectiveName) -> None:
    info = OBJECTIVES[name]
    first, rest, whole = metrics_of(5), metrics_of(15, first_image=5), metrics_of(20)
    assert info.merge(first, rest, info.metric) == pytest.approx(info.value(whole))
    assert merged(first, rest).objective(name) == pytest.approx(info.value(whole))


@EVERY
def test_a_merge_without_answer_counts_pools_by_images(name: ObjectiveName) -> None:
    info = OBJECTIVES[name]
    first = metrics_of(4).model_copy(update={"human_images": None})
    rest = metrics_of(12, first_image=4).model_copy(update={"human_images": None})
    pooled = (4 * info.value(first) + 12 * info.value(rest)) / 16
    assert info.merge(first, rest, info.metric) == pytest.approx(pooled)


@EVERY
def test_bounds_hold_the_estimate_and_credible_intervals_hold_it_too(name: ObjectiveName) -> None:
    info = OBJECTIVES[name]
    metrics = metrics_of(8)
    low, high = info.bound.bounds(metrics, info.metric, "key", 0.9)
    assert low <= info.value(metrics) <= high
    credible = info.bound.credible(metrics, info.metric, "key", 0.95)
    if credible is not None:
        assert credible[0] <= info.value(metrics) <= credible[1]
    assert info.bound.has_evidence(metrics)


@EVERY
def test_held_out_rows_give_the_value_the_search_gives_over_the_same_images(name: ObjectiveName) -> None:
    info = OBJECTIVES[name]
    first, rest = metrics_of(5), metrics_of(15, first_image=5)
    sums = prompt_table([row_of(first), row_of(rest)]).sum(axis=0)
    assert float(info.held_out.value(sums)) == pytest.approx(merged(first, rest).objective(name))
    assert info.held_out.has_evidence(sums)


@EVERY
def test_a_bias_without_a_mapped_answer_rests_on_no_evidence_anywhere(name: ObjectiveName) -> None:
    info = OBJECTIVES[name]
    nobody = metrics_of(6).model_copy(
        update={"human_images": 0, "female_images": 0, "male_images": 0}
        | {"white_images": 0, "asian_images": 0, "black_images": 0, "arab_images": 0}
        | {"gender_bias": UNKNOWN_BIAS, "ethnic_bias": UNKNOWN_BIAS}
    )
    sums = prompt_table([row_of(nobody)]).sum(axis=0)
    is_bias = name in (ObjectiveName.GENDER_BIAS, ObjectiveName.ETHNIC_BIAS)
    assert info.bound.has_evidence(nobody) is not is_bias
    assert info.held_out.has_evidence(sums) is not is_bias
    assert nobody.has_evidence(name) is not is_bias
    if is_bias:
        assert float(info.held_out.value(sums)) == UNKNOWN_BIAS
        assert info.bound.credible(nobody, info.metric, "key", 0.95) is None
        assert info.bound.bounds(nobody, info.metric, "key", 0.9) == (0.0, 1.0)


def test_every_objective_has_a_row_and_every_row_names_every_statistic() -> None:
    assert set(OBJECTIVES) == set(ObjectiveName)
    statistics = {"merge", "bound", "held_out"}
    fields = {f.name: f for f in dataclasses.fields(ObjectiveInfo)}
    assert statistics <= set(fields)
    assert all(fields[s].default is dataclasses.MISSING for s in statistics)  # no silent default
    row: dict[str, Any] = {f: getattr(OBJECTIVES[ObjectiveName.TIME], f) for f in fields}
    with pytest.raises(TypeError, match="held_out"):
        ObjectiveInfo(**{k: v for k, v in row.items() if k != "held_out"})


def test_a_registry_without_a_row_for_an_objective_refuses_to_load() -> None:
    rows = [info for name, info in OBJECTIVES.items() if name is not ObjectiveName.TIME]
    with pytest.raises(TypeError, match="objectives without a row in the registry: Time"):
        objectives.registry_of(rows)
    with pytest.raises(TypeError, match="two rows"):
        objectives.registry_of([*OBJECTIVES.values(), OBJECTIVES[ObjectiveName.TIME]])


def test_quality_pools_by_the_scores_each_part_recorded_and_old_results_count_one_per_image() -> None:
    """Detector boxes: 2 images with 6 boxes at 0.2, then 2 images with 2 boxes at 0.8; the whole
    evaluation's quality is over its 8 boxes. Results (and held-out rows) written before the scores
    were counted read as one score per image."""
    few = metrics_of(2).model_copy(update={"quality": 0.8, "quality_scores": 2, "quality_stddev": 0.0})
    many = metrics_of(2, 2).model_copy(update={"quality": 0.2, "quality_scores": 6, "quality_stddev": 0.0})
    by_box = (2 * 0.8 + 6 * 0.2) / 8
    combined = merged(few, many)
    assert combined.quality == pytest.approx(by_box)
    assert combined.quality_scores == 8
    assert combined.quality_stddev == pytest.approx(statistics.pstdev([0.8] * 2 + [0.2] * 6))
    old_few, old_many = (m.model_copy(update={"quality_scores": None}) for m in (few, many))
    assert old_few.scores == old_few.images
    assert merged(old_few, old_many).quality == pytest.approx((0.8 + 0.2) / 2)  # by images, as before
    assert merged(old_few, old_many).quality_scores is None
    rows = [
        row_of(few).model_copy(update={"quality_sum": 2 * 0.8, "quality_scores": 2}),
        row_of(many).model_copy(update={"quality_sum": 6 * 0.2, "quality_scores": 6}),
    ]
    held_out = OBJECTIVES[ObjectiveName.QUALITY].held_out
    assert float(held_out.value(prompt_table(rows).sum(axis=0))) == pytest.approx(by_box)
    old_rows = [row_of(few), row_of(many)]  # no quality_scores: one score per image
    assert float(held_out.value(prompt_table(old_rows).sum(axis=0))) == pytest.approx((0.8 + 0.2) / 2)
