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


def test_the_benchmark_runs_and_prints_both_arms(capsys: pytest.CaptureFixture[str]) -> None:
    assert search_energy.main(["--seeds", "1", "--population", "6", "--generations", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:]]
    assert [(row[0], row[1]) for row in rows] == [
        ("method", "plain"),
        ("method", "canonical"),
        ("distilled", "plain"),
        ("distilled", "canonical"),
    ]
    assert all(float(row[4]) > 0 for row in rows)  # energy spent
