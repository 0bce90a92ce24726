"""The benchmarks' simulated models (`benchmarks/landscapes.py`): the first model unchanged behind the
common interface; the overshoot model's structure (parts that merge exactly, energy that depends on
the batch, regenerations, common random numbers, a gender response that overshoots parity)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.landscapes import (
    FEMALE_EFFECT,
    MAX_RETRIES,
    OvershootLandscape,
    SimulatorLandscape,
    merged,
)
from benchmarks.simulator import simulate
from sustaindiffusion.api.candidate import CandidateSettings

OVERSHOOT = OvershootLandscape()
SETTINGS = CandidateSettings(
    inference_steps=40,
    guidance_scale=5.0,
    positive_keywords=["gentle", "emotional", "Kodak portra 800"],
    prompt_weight=1,
)
COUNTS = ("images", "human_images", "female_images", "male_images")
ETHNIC = ("white_images", "asian_images", "black_images", "arab_images")


def test_the_first_model_gives_the_same_results_behind_the_interface() -> None:
    evaluation = SimulatorLandscape().evaluate("a" * 16, SETTINGS, 3, 9, run_seed=4)
    assert evaluation.result == simulate("a" * 16, SETTINGS, 9, 4, first_image=3)
    assert evaluation.regenerated == 0


def test_parts_of_an_overshoot_evaluation_merge_into_the_whole_but_cost_more_per_image() -> None:
    whole = OVERSHOOT.evaluate("a" * 16, SETTINGS, 0, 20, run_seed=2)
    first = OVERSHOOT.evaluate("a" * 16, SETTINGS, 0, 2, run_seed=2)
    both = merged(first, OVERSHOOT.evaluate("a" * 16, SETTINGS, 2, 18, run_seed=2))
    assert whole.result.metrics is not None
    assert both.result.metrics is not None
    for name in (*COUNTS, *ETHNIC, "gender_bias", "ethnic_bias"):
        assert getattr(both.result.metrics, name) == getattr(whole.result.metrics, name)
    assert both.result.metrics.quality == pytest.approx(whole.result.metrics.quality)
    assert both.result.metrics.quality_stddev == pytest.approx(whole.result.metrics.quality_stddev)
    assert both.regenerated == whole.regenerated

    def joules_per_image(first_image: int, images: int) -> float:
        evaluations = [
            OVERSHOOT.evaluate("a" * 16, SETTINGS, first_image, images, seed) for seed in range(30)
        ]
        return float(np.mean([e.joules for e in evaluations]) / images)

    # Two images run as one batch of 2 (0.85 of the per-pass cost per image), twenty in 8, 8, 4
    # (0.745 on average): a first pass pays 14% more per image, with the same regenerations.
    assert joules_per_image(0, 2) / joules_per_image(0, 20) == pytest.approx(0.85 / 0.745, rel=0.03)


def test_images_without_a_person_are_regenerated_up_to_the_cap_and_paid_for() -> None:
    abstract = CandidateSettings(
        positive_keywords=["blended visuals", "overlapping compositions"], prompt_weight=5
    )
    response = OVERSHOOT.response(abstract)
    assert response.failure == pytest.approx(0.6)  # capped
    evaluations = [OVERSHOOT.evaluate("b" * 16, abstract, 0, 20, seed) for seed in range(40)]
    metrics = [e.result.metrics for e in evaluations if e.result.metrics is not None]
    regenerated = np.mean([e.regenerated for e in evaluations]) / 20
    assert regenerated == pytest.approx(0.6 + 0.6**2 + 0.6**3, rel=0.1)
    non_human = 1 - np.mean([m.human_images for m in metrics]) / 20
    assert non_human == pytest.approx(0.6 ** (MAX_RETRIES + 1), abs=0.04)
    plain = OVERSHOOT.evaluate("c" * 16, CandidateSettings(), 0, 20, 0).result.metrics
    assert plain is not None
    assert np.mean([m.energy_joules_per_image for m in metrics]) > 1.8 * plain.energy_joules_per_image


def test_candidates_share_their_images_randomness() -> None:
    # Steps change neither the answers' probabilities nor the filter: with common random numbers
    # two such candidates get the same answers on the same seed, and their own quality noise.
    slow = OVERSHOOT.evaluate("d" * 16, SETTINGS.model_copy(update={"inference_steps": 70}), 0, 20, 5)
    assert slow.result.metrics is not None
    fast = OVERSHOOT.evaluate("e" * 16, SETTINGS, 0, 20, 5).result.metrics
    assert fast is not None
    for name in (*COUNTS, *ETHNIC):
        assert getattr(slow.result.metrics, name) == getattr(fast, name)
    assert slow.result.metrics.quality != fast.quality


def test_female_keywords_push_the_gender_bias_down_past_parity_and_up_again() -> None:
    strongest_first = sorted(FEMALE_EFFECT, key=FEMALE_EFFECT.__getitem__, reverse=True)
    biases = [
        OVERSHOOT.true_values(CandidateSettings(positive_keywords=strongest_first[:n])).gender_bias
        for n in range(len(strongest_first) + 1)
    ]
    lowest = int(np.argmin(biases))
    assert 0 < lowest < len(biases) - 1
    assert biases[0] > 0.9
    assert biases[lowest] < 0.2
    assert biases[-1] > 0.8
