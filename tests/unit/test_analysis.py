"""The study analysis: its statistics against published values (scipy's documentation, Holm's and
Vargha and Delaney's definitions), and the tables it builds from runs."""

from __future__ import annotations

import math

import pytest

from sustaindiffusion.api.task import Part
from sustaindiffusion.local.analysis import (
    HeldOutCounts,
    RunSummary,
    a12,
    a12_magnitude,
    arm_table,
    compare,
    comparisons,
    held_out_changes,
    held_out_counts,
    holm,
    paper_comparison,
    per_run,
)
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.status import validation_status
from tests.support.engine_runs import make_spec
from tests.support.fake_evaluator import fake_evaluate, fake_prompt_stats
from tests.support.measures import DEFAULTS, front_point


def test_mann_whitney_and_a12_on_scipys_example() -> None:
    males, females = [19, 22, 16, 29, 24], [20, 11, 17, 12]  # scipy.stats.mannwhitneyu's example
    test, p_value = compare(males, females, paired=False)
    assert test == "mannwhitneyu"
    assert p_value == pytest.approx(0.11111, abs=1e-5)
    assert a12(males, females) == pytest.approx(17 / 20)  # U = 17 of 5 x 4 pairs
    assert a12_magnitude(a12(males, females)) == "large"


def test_wilcoxon_on_scipys_example() -> None:
    differences = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]  # scipy.stats.wilcoxon's
    test, p_value = compare(differences, [0] * len(differences), paired=True)
    assert test == "wilcoxon"
    assert p_value == pytest.approx(0.041259765625)


def test_identical_samples_cannot_differ() -> None:
    assert compare([1.0, 2.0], [1.0, 2.0], paired=True) == ("wilcoxon", 1.0)
    assert compare([3.0, 3.0], [3.0, 3.0], paired=False) == ("mannwhitneyu", 1.0)
    assert a12([1, 2, 3], [1, 2, 3]) == 0.5
    assert a12([4, 5, 6], [1, 2, 3]) == 1.0


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (0.5, "negligible"),
        (0.55, "negligible"),
        (0.6, "small"),
        (0.38, "small"),
        (0.64, "medium"),
        (0.68, "medium"),
        (0.75, "large"),
        (0.1, "large"),
    ],
)
def test_a12_magnitudes_follow_vargha_and_delaney(value: float, label: str) -> None:
    assert a12_magnitude(value) == label


def test_holm_adjusts_step_down_and_keeps_the_order() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def _runs() -> list[RunSummary]:
    runs = []
    for seed in range(5):
        fair = [front_point(0.6, 0.2 + 0.01 * seed, 600.0), front_point(0.62, 0.4, 400.0)]
        plain = [front_point(0.6, 0.9 - 0.01 * seed, 900.0)]
        runs.append(RunSummary("fair", seed, fair, DEFAULTS, 1000.0))
        runs.append(RunSummary("plain", seed, plain, DEFAULTS, 1000.0))
    return runs


def test_the_arm_table_gives_means_spreads_and_changes_against_the_defaults() -> None:
    table = arm_table(_runs()).set_index("arm")
    assert list(table.index) == ["defaults", "fair", "plain"]
    assert table.loc["fair", "runs"] == 5
    assert table.loc["fair", "gender_bias_mean"] == pytest.approx(
        0.31
    )  # (0.2 + 0.01 seed + 0.4) / 2 over seeds 0..4
    assert table.loc["plain", "gender_bias_in_sample_change_percent"] == pytest.approx(-12.0)
    assert table.loc["defaults", "gender_bias_mean"] == 1.0
    assert table.loc["fair", "hypervolume_mean"] > table.loc["plain", "hypervolume_mean"]
    assert table.loc["plain", "gender_bias_std"] == pytest.approx(0.0158114, abs=1e-6)


def test_comparisons_pair_runs_by_seed_and_correct_for_the_arms() -> None:
    tests = comparisons(_runs(), reference="plain").set_index("measure")
    gender = tests.loc["gender_bias"]
    assert gender["test"] == "wilcoxon"  # the same seeds 0..4 in both arms
    assert gender["a12"] == 0.0  # fair's gender bias is lower in every run
    assert gender["magnitude"] == "large"
    assert gender["p_value"] == pytest.approx(0.0625)  # 5 pairs all one way: the exact minimum
    assert gender["p_holm"] == gender["p_value"]  # one comparison per measure
    assert 0 < gender["kruskal_p_value"] < 0.05
    unpaired = [r for r in _runs() if not (r.arm == "plain" and r.run == 4)]
    assert comparisons(unpaired, "plain").set_index("measure").loc["gender_bias", "test"] == "mannwhitneyu"
    with pytest.raises(LookupError, match="no runs of the reference arm 'other'"):
        comparisons(_runs(), reference="other")


def test_a_run_without_a_front_has_no_means_and_no_hypervolume() -> None:
    empty = RunSummary("empty", 0, [], None, None)
    frame = per_run([empty])
    assert math.isnan(frame.loc[0, "quality"])
    assert frame.loc[0, "hypervolume"] == 0.0


def test_the_papers_table_sits_beside_the_studys_means() -> None:
    runs = [
        RunSummary("sustaindiffusion", seed, [front_point(0.69, 0.32 * 1.5, 1000.0)], DEFAULTS, 1000.0)
        for seed in range(2)
    ]
    beside = paper_comparison(arm_table(runs)).set_index(["arm", "measure"])
    assert beside.loc[("sustaindiffusion", "gender_bias"), "paper"] == 0.32
    assert beside.loc[("sustaindiffusion", "gender_bias"), "difference_percent"] == pytest.approx(50.0)
    assert beside.loc[("sustaindiffusion", "gender_bias"), "comparable"]
    assert beside.loc[("defaults", "seconds_per_image"), "paper"] == 34.0
    assert "recommended" not in {arm for arm, _ in beside.index}  # the paper has no such arm
    # Another statistic than the paper's: the reason, and no number beside the paper's.
    quality = beside.loc[("sustaindiffusion", "quality")].to_dict()
    assert not quality["comparable"]
    assert "yolos-tiny" in str(quality["why_not"])
    assert math.isnan(float(quality["study"]))
    assert math.isnan(float(quality["difference_percent"]))
    assert not beside.loc[("sustaindiffusion", "ethnic_bias"), "comparable"]
    assert "8 images per pipeline call" in beside.loc[("defaults", "gpu_kwh_per_image"), "why_not"]


def _validated_engine() -> SearchEngine:
    """A search with held-out validation on 3 prompts, driven by the fake evaluator."""
    engine = SearchEngine(make_spec(validation={"prompts": {"inline": ["one", "two", "three"]}, "points": 2}))
    while not engine.outcome().finished:
        for candidate in engine.ask():
            result = fake_evaluate(candidate)
            if engine.part is Part.VALIDATION:
                result.per_prompt = fake_prompt_stats(candidate.settings, 3, 10)
            engine.tell(result)
    return engine


def test_a_runs_validated_points_count_prompts_won_traded_and_lost() -> None:
    summary = RunSummary.of("fair", 0, _validated_engine())
    assert [point.role for point in summary.held_out][:1] == ["knee"]  # the defaults are the reference
    assert len(summary.held_out) == 2
    assert all(p.wins + p.pareto + p.losses == 3 for p in summary.held_out)
    without = RunSummary.of("plain", 0, SearchEngine(make_spec()))
    assert without.held_out == ()


def test_a_runs_validated_points_carry_held_out_and_in_sample_changes_and_prompt_outcomes() -> None:
    engine = _validated_engine()
    summary = RunSummary.of("fair", 0, engine)
    status = validation_status(engine)
    assert status is not None
    knee, held = summary.held_out[0], status.points[1]
    assert len(knee.outcomes) == 3
    assert (knee.outcomes.count(1), knee.outcomes.count(0), knee.outcomes.count(-1)) == (
        knee.wins,
        knee.pareto,
        knee.losses,
    )
    assert set(knee.changes) == {o.name.value for o in engine.spec.objectives}
    for name, change in knee.changes.items():
        objective = (held.objectives or {})[name]
        assert change.held_out == objective.change_percent
        assert (change.low, change.high) == (objective.change_low, objective.change_high)
        assert change.point is not None
        assert change.point.shape[0] == 3


def test_held_out_changes_lead_with_an_interval_over_runs_and_prompts() -> None:
    engine = _validated_engine()
    runs = [RunSummary.of("fair", seed, engine) for seed in range(3)]
    changes = held_out_changes(runs, samples=400).set_index(["arm", "role", "objective"])
    row = changes.loc[("fair", "knee", "Energy")]
    single = runs[0].held_out[0].changes["Energy"]
    assert row["runs"] == 3
    assert row["held_out_change_percent"] == pytest.approx(single.held_out)  # three copies of one run
    assert row["held_out_low"] <= row["held_out_change_percent"] <= row["held_out_high"]
    assert row["in_sample_change_percent"] == pytest.approx(single.in_sample)
    again = held_out_changes(runs, samples=400).set_index(["arm", "role", "objective"])
    assert again.loc[("fair", "knee", "Energy"), "held_out_low"] == row["held_out_low"]  # seeded
    one = held_out_changes(runs[:1], samples=400).set_index(["arm", "role", "objective"])
    assert one.loc[("fair", "knee", "Energy"), "held_out_change_percent"] == pytest.approx(single.held_out)
    assert held_out_changes([RunSummary("plain", 0, [], None, None)]).empty


def test_per_prompt_counts_say_what_they_can_support() -> None:
    """Wins and losses balanced per prompt over the runs, then a sign test over the prompts."""
    runs = [
        RunSummary("fair", seed, [], None, None, (HeldOutCounts("knee", 2, 1, 0, (1, 1, 0)),))
        for seed in range(3)
    ]
    row = held_out_counts(runs).set_index(["arm", "role"]).loc[("fair", "knee")].to_dict()
    assert (row["units_won"], row["units_traded"], row["units_lost"]) == (2, 1, 0)
    assert row["unit"] == "prompt, over runs"
    assert row["sign_test_p"] == pytest.approx(0.5)
    assert "2 wins, 1 trade, 0 losses of 3 prompts" in row["conclusion"]
    assert "not significant at 5%" in row["conclusion"]
    assert "it takes at least 6" in row["conclusion"]
    many = [RunSummary("fair", 0, [], None, None, (HeldOutCounts("knee", 8, 0, 0, (1,) * 8),))]
    assert "more wins than losses beyond chance" in held_out_counts(many).loc[0, "conclusion"]


def test_held_out_counts_sum_over_runs_per_arm_andfront_point() -> None:
    runs = [
        RunSummary(
            "fair", 0, [], None, None, (HeldOutCounts("knee", 2, 1, 0), HeldOutCounts("spread", 0, 1, 2))
        ),
        RunSummary("fair", 1, [], None, None, (HeldOutCounts("knee", 1, 1, 1),)),
        RunSummary("plain", 0, [], None, None),
    ]
    counts = held_out_counts(runs).set_index(["arm", "role"])
    assert counts.loc[("fair", "knee"), ["runs", "wins", "pareto", "losses", "prompts"]].tolist() == [
        2,
        3,
        2,
        1,
        6,
    ]
    assert counts.loc[("fair", "knee"), "win_percent"] == pytest.approx(50.0)
    assert counts.loc[("fair", "spread"), "loss_percent"] == pytest.approx(200 / 3)
    assert "plain" not in counts.index.get_level_values("arm")
    assert held_out_counts(runs[2:]).empty
