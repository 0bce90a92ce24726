"""The evidence-budget benchmark (`benchmarks/evidence_budget.py`): runs read at any energy between
generations, arms compared with controls at equal energy seed by seed, plain arms run on to an
energy budget, and the table end to end on a small search."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import evidence_budget
from benchmarks.landscapes import OvershootLandscape

OVERSHOOT = OvershootLandscape()


def _run(points: list[tuple[float, float]], end: int) -> evidence_budget.Run:
    steps = tuple(evidence_budget.Step(i - 1, 0, e, hv) for i, (e, hv) in enumerate(points))
    return evidence_budget.Run(steps, end)


def test_runs_are_read_at_any_energy_between_their_generations() -> None:
    run = _run([(0.0, 0.0), (10.0, 0.0), (20.0, 0.4), (30.0, 0.5)], end=2)
    assert evidence_budget.hypervolume_at(run, 15.0) == pytest.approx(0.2)
    assert evidence_budget.hypervolume_at(run, 99.0) == pytest.approx(0.5)
    energies = np.array([s.joules for s in run.steps])
    values = np.array([s.true_hypervolume for s in run.steps])
    assert evidence_budget.energy_to_reach(energies, values, 0.45) == pytest.approx(25.0)
    assert evidence_budget.energy_to_reach(energies, values, 0.6) is None


def test_an_arm_is_compared_with_a_control_at_its_own_energy_seed_by_seed() -> None:
    arm = evidence_budget.ArmRuns("a", [_run([(0, 0), (10, 0.3)], 1), _run([(0, 0), (10, 0.5)], 1)])
    control = evidence_budget.ArmRuns("c", [_run([(0, 0), (20, 0.4)], 1), _run([(0, 0), (20, 0.2)], 1)])
    change, _ = evidence_budget.paired_change(arm, control)
    assert change == pytest.approx(((0.3 - 0.2) + (0.5 - 0.1)) / 2)
    # The arm's mean curve, 0.04 per joule, reaches the control's mean 0.3 at 7.5 J, of the control's
    # 20; on its own curve only the second seed reaches its control's value.
    ratio, reached = evidence_budget.reach(arm, control)
    assert ratio == pytest.approx(7.5 / 20, rel=1e-3)
    assert reached == 1
    assert evidence_budget.reach(control, arm) == (None, 1)


def test_plain_arms_run_on_to_the_energy_budget_and_keep_their_own_result() -> None:
    config = evidence_budget.Config(population=6, generations=3, images=8, ceiling=30)
    landscape = OVERSHOOT
    quarter = evidence_budget.PlainArm("plain-N/4", 4)
    own = quarter(config, landscape, 1, None)
    assert own.result.generation == 3
    assert own.steps[-1] == own.result
    extended = quarter(config, landscape, 1, 3 * own.result.joules)
    assert extended.steps[: own.end + 1] == own.steps
    assert extended.steps[-1].joules >= 3 * own.result.joules
    assert all(a.joules <= b.joules for a, b in zip(extended.steps, extended.steps[1:], strict=False))


def test_the_benchmark_prints_every_arm_against_every_control(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--seeds", "2", "--population", "6", "--generations", "2", "--images", "8", "--ceiling", "12"]
    assert evidence_budget.main([*argv, "--landscape", "overshoot"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("plain-")]
    assert [row.split()[0] for row in rows] == ["plain-N", "plain-N/2", "plain-N/4"]
    assert all(row.count("p=") == 2 for row in rows)  # each against the two other controls


def test_the_experimental_arms_give_no_candidate_more_than_n_images() -> None:
    config = evidence_budget.Config(population=6, generations=2, images=8, ceiling=10)
    asked = 1 + config.population * config.generations  # the defaults, then at most a population each
    for arm in evidence_budget.experimental_arms():
        run = arm(config, OVERSHOOT, 3, None)
        assert run.result.generation == 2
        assert 0 < run.result.images <= asked * config.images


def test_arm_runs_one_arm_beside_the_controls_and_refuses_an_unknown_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--seeds", "1", "--population", "6", "--generations", "2", "--images", "8", "--ceiling", "12"]
    assert evidence_budget.main([*argv, "--landscape", "simulator", "--arm", "adaptive front"]) == 0
    out = capsys.readouterr().out
    names = [line[:14].strip() for line in out.splitlines() if line.startswith(("plain-", "adaptive"))]
    assert names[:4] == ["plain-N", "plain-N/2", "plain-N/4", "adaptive front"]
    assert "adaptive" not in names  # the default adaptive arm did not run
    with pytest.raises(SystemExit):
        evidence_budget.main([*argv, "--arm", "no such arm"])
    assert "no arm named no such arm" in capsys.readouterr().err


def test_the_oracle_searches_as_plain_n_does_and_is_charged_only_what_it_spent() -> None:
    config = evidence_budget.Config(population=6, generations=3, images=8, ceiling=10)
    plain = evidence_budget.PlainArm("plain-N", 1)(config, OVERSHOOT, 2, None)
    oracle_arm = evidence_budget.OracleArm("oracle front")
    oracle = oracle_arm(config, OVERSHOOT, 2, None)
    # Told every whole evaluation, the engine searches exactly as plain-N does on the same seed.
    assert [s.true_hypervolume for s in oracle.steps] == [s.true_hypervolume for s in plain.steps]
    counts = oracle_arm.decidable[OVERSHOOT.name]
    stopped, judged = counts.stopped, counts.judged
    assert judged == config.population * config.generations
    assert 0 < stopped < judged
    # A stopped candidate is charged its first batch of 2 images, the others all 8.
    defaults = config.images  # the baselines: the defaults alone here, evaluated whole
    assert oracle.result.images == defaults + stopped * 2 + (judged - stopped) * config.images
    assert oracle.result.joules < plain.result.joules
    # Looser bounds decide at least the stops that tighter ones decide, never more than were made.
    decided = [counts.by_error.get(error, 0) for error in sorted(oracle_arm.errors)]
    assert decided == sorted(decided)
    assert decided[-1] <= stopped
