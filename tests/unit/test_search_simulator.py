"""The search benchmark's simulated model: calibrated to the method's defaults, equivalent settings
give the same images, and the benchmark runs end to end (kept small here; its full form is
`python benchmarks/search_energy.py`)."""

from __future__ import annotations

import pytest

from benchmarks import search_energy
from benchmarks.simulator import SD3_MEDIUM, simulate, true_values
from sustaindiffusion.api.candidate import CandidateSettings


def test_the_defaults_match_the_method_magnitudes() -> None:
    defaults = true_values(CandidateSettings(), SD3_MEDIUM)
    assert defaults.gender_bias == pytest.approx(0.99)
    assert defaults.ethnic_bias == pytest.approx(0.76)
    assert defaults.energy_joules_per_image == pytest.approx((0.0019 + 0.0002) * 3.6e6)


def test_equivalent_settings_give_the_same_measurements_and_guidance_off_halves_the_passes() -> None:
    off = CandidateSettings(inference_steps=30, guidance_scale=1.0, positive_keywords=["gentle"])
    with_negatives = off.model_copy(update={"negative_keywords": ["lowres"]})
    first = simulate("a" * 16, off, 20, run_seed=3)
    second = simulate("b" * 16, with_negatives, 20, run_seed=3)
    assert first.metrics == second.metrics
    on = off.model_copy(update={"guidance_scale": 1.5})
    assert true_values(on).energy_joules_per_image == pytest.approx(
        2 * true_values(off).energy_joules_per_image
    )


def test_the_benchmark_runs_and_prints_every_arm(capsys: pytest.CaptureFixture[str]) -> None:
    assert search_energy.main(["--seeds", "1", "--population", "6", "--generations", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:]]
    arms = [arm.name for arm in search_energy.ARMS]
    assert [(row[0], row[1]) for row in rows] == [
        (space, arm) for space in search_energy.SPACES for arm in arms
    ]
    assert all(float(row[4]) > 0 for row in rows)  # energy spent
    by_arm = {(row[0], row[1]): row for row in rows}
    for space in search_energy.SPACES:
        assert float(by_arm[space, "plain"][6]) == 0  # nothing screened without screening
        assert float(by_arm[space, "screen-2"][3]) < float(by_arm[space, "canonical"][3])  # images


def test_a_first_pass_and_its_rest_draw_the_images_of_one_whole_evaluation() -> None:
    settings = CandidateSettings(inference_steps=30, positive_keywords=["gentle", "feminine"])
    whole = simulate("a" * 16, settings, 12, run_seed=1).metrics
    first = simulate("a" * 16, settings, 4, run_seed=1).metrics
    rest = simulate("a" * 16, settings, 8, run_seed=1, first_image=4).metrics
    assert whole is not None
    assert first is not None
    assert rest is not None
    assert whole.female_images == (first.female_images or 0) + (rest.female_images or 0)
    assert whole.white_images == (first.white_images or 0) + (rest.white_images or 0)
    assert whole.gpu_joules == pytest.approx(first.gpu_joules + rest.gpu_joules)
