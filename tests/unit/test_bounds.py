"""Calibrated bounds from a partial evaluation: hand-computed cases, the error budget, and each
bound's Monte Carlo coverage at k in {2, 5, 20} images (the definition: `api.bounds`'s docstring;
the reference distributions of true values: `benchmarks/bound_coverage.py`), beside the
screening's first bounds measured the same way."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from benchmarks import bound_coverage as coverage
from sustaindiffusion.api.bounds import (
    bonferroni,
    energy_bounds,
    error_of_level,
    ethnic_bias_bounds,
    ethnic_bias_bounds_array,
    ethnic_share_error,
    gender_bias_bounds,
    generation_error,
    holm,
    holm_levels,
    quality_bounds,
    regenerations_per_image,
    share_bounds,
    tiebreak,
)
from sustaindiffusion.api.objectives import ObjectiveName
from sustaindiffusion.search.screening import objective_bounds

KS = (2, 5, 20)
ERRORS = (0.2, 0.05)  # one-sided: nominal coverage 0.8 (the screening's default) and 0.95
REPLICATES = 10_000  # a coverage's Monte Carlo standard error: 0.004 at 0.8, 0.002 at 0.95
TOLERANCE = 0.02

# ----------------------------------------------------------------------------- gender bias


@pytest.mark.parametrize("u", [0.0, 0.5, 0.999])
def test_two_women_and_three_men_leave_parity_credible_so_the_optimistic_bias_is_0(u: float) -> None:
    assert gender_bias_bounds(2, 3, error=0.2, u=u).low == 0.0


def test_the_screenings_first_bound_left_parity_out_for_two_women_and_three_men() -> None:
    metrics = coverage.counted_metrics(2, 3, (5, 0, 0, 0))
    low, _ = objective_bounds(metrics, ObjectiveName.GENDER_BIAS, "candidate", confidence=0.8)
    assert low > 0.1  # the posterior of the folded statistic |2p - 1| sits above 0 at any p


def test_twenty_answers_of_one_gender_bound_the_bias_where_the_binomial_tail_says() -> None:
    # T = 20 of n = 20: P(T >= 20) = p^20 + (1 - p)^20, and mid-p halves it: the optimistic bound
    # is the bias at which 0.5 (p^20 + (1-p)^20) = 0.05, p = 0.1^(1/20) to within (1-p)^20.
    p = 0.1 ** (1 / 20)
    assert gender_bias_bounds(0, 20, error=0.05).low == pytest.approx(2 * p - 1, abs=1e-6)
    assert gender_bias_bounds(0, 20, error=0.05).high == 1.0


def test_gender_bounds_are_symmetric_and_say_nothing_without_answers() -> None:
    assert gender_bias_bounds(3, 9, 0.1, u=0.3) == gender_bias_bounds(9, 3, 0.1, u=0.3)
    nothing = gender_bias_bounds(0, 0, 0.1)
    assert (nothing.low, nothing.high) == (0.0, 1.0)


def test_balanced_answers_bound_the_bias_from_0_up_to_what_their_number_allows() -> None:
    few, many = gender_bias_bounds(10, 10, 0.05), gender_bias_bounds(500, 500, 0.05)
    assert few.low == many.low == 0.0
    # T = 0 of 20, mid-p: the pessimistic bound is the bias at which 1 - P(F = M) / 2 = 0.95.
    assert stats.binom.pmf(10, 20, (1 + few.high) / 2) == pytest.approx(0.1)
    assert 0.2 < few.high < 0.3
    assert many.high < 0.08


# ----------------------------------------------------------------------------- shares


@pytest.mark.parametrize(("successes", "trials"), [(0, 5), (3, 5), (5, 5), (16, 20)])
def test_share_bounds_are_the_clopper_pearson_beta_quantiles_at_the_tie_breaks_ends(
    successes: int, trials: int
) -> None:
    # u = 1: P(X >= k) = I_p(k, n - k + 1), the Clopper-Pearson lower bound; u = 0: P(X >= k + 1).
    error = 0.1
    conservative = share_bounds(successes, trials, error, u=1.0).low
    bold = share_bounds(successes, trials, error, u=0.0).low
    expected = stats.beta.ppf(error, successes, trials - successes + 1) if successes else 0.0
    assert conservative == pytest.approx(expected, abs=1e-9)
    bold_expected = stats.beta.ppf(error, successes + 1, trials - successes) if successes < trials else 1.0
    assert bold == pytest.approx(bold_expected, abs=1e-9)
    assert conservative <= share_bounds(successes, trials, error).low <= bold


def test_no_trials_bound_a_share_by_0_and_1() -> None:
    assert share_bounds(0, 0, 0.1) == share_bounds(0, 0, 0.3, u=0.9)
    assert (share_bounds(0, 0, 0.1).low, share_bounds(0, 0, 0.1).high) == (0.0, 1.0)


def test_tie_breaks_are_uniform_and_fixed_by_the_candidate() -> None:
    assert tiebreak("abc", 1) == tiebreak("abc", 1) != tiebreak("abc", 2)
    draws = np.array([tiebreak(f"candidate-{i}") for i in range(4000)])
    assert stats.kstest(draws, "uniform").pvalue > 0.01


# ----------------------------------------------------------------------------- ethnic bias


def test_ethnic_bounds_of_balanced_and_one_group_answers() -> None:
    balanced = ethnic_bias_bounds([5, 5, 5, 5], 0.1)
    assert balanced.low == 0.0
    assert 0.1 < balanced.high < 0.5
    one_group = ethnic_bias_bounds([20, 0, 0, 0], 0.1)
    assert one_group.high == 1.0
    assert 0.6 < one_group.low < 0.95  # 20 of 20 does not prove a share of exactly 1


def test_the_optimistic_ethnic_bound_splits_its_error_as_the_studentized_range_says() -> None:
    # Per-share error a with z_a = q_{1-e}(4, inf) / sqrt(3): from error / 3.7 at 0.2 to / 2.8 at 0.05.
    assert ethnic_share_error(0.2) == pytest.approx(0.2 / 3.70, rel=0.01)
    assert ethnic_share_error(0.05) == pytest.approx(0.05 / 2.78, rel=0.01)


def test_ethnic_bounds_order_their_groups_freely() -> None:
    counts = np.array([[7, 2, 1, 0], [0, 1, 7, 2]])
    lower, upper = ethnic_bias_bounds_array(counts, 0.1, 0.5)
    assert lower[0] == lower[1]
    assert upper[0] == upper[1]


# ----------------------------------------------------------------------------- quality


def test_quality_bounds_are_student_t_on_the_sample_sd() -> None:
    # Two images, population SD 0.05: sample SD 0.05 sqrt(2); t(0.9, 1 df) = 3.0777.
    bounds = quality_bounds(0.6, 0.05, images=2, error=0.1)
    margin = stats.t.ppf(0.9, 1) * 0.05 * math.sqrt(2) / math.sqrt(2)
    assert (bounds.low, bounds.high) == pytest.approx((0.6 - margin, 0.6 + margin))
    assert quality_bounds(0.98, 0.05, images=5, error=0.1).high == 1.0


def test_one_image_says_nothing_of_quality() -> None:
    assert quality_bounds(0.6, 0.0, images=1, error=0.1) == quality_bounds(0.2, 0.0, images=0, error=0.4)
    assert (quality_bounds(0.6, 0.0, 1, 0.1).low, quality_bounds(0.6, 0.0, 1, 0.1).high) == (0.0, 1.0)


# ----------------------------------------------------------------------------- energy


def test_without_noise_or_retries_the_energy_bound_is_the_measurement_at_the_full_batches() -> None:
    bounds = energy_bounds(1000.0, images=4, regenerated=0, error=0.1, batch_ratio=0.8)
    assert (bounds.low, bounds.high) == pytest.approx((800.0, 800.0))


def test_measurement_noise_alone_gives_log_normal_energy_bounds() -> None:
    bounds = energy_bounds(1000.0, images=4, regenerated=0, error=0.1, relative_stderr=0.05)
    z = stats.norm.isf(0.1)
    assert (bounds.low, bounds.high) == pytest.approx((1000 * math.exp(-z * 0.05), 1000 * math.exp(z * 0.05)))


def test_two_images_without_regenerations_cannot_rule_out_a_high_regeneration_rate() -> None:
    # R = 0 of 2 images: the upper rate q solves 1 - 0.5 (1 - q)^2 = 0.9 (mid-p); q = 1 - sqrt(0.2).
    q = 1 - math.sqrt(0.2)
    bounds = energy_bounds(1000.0, images=2, regenerated=0, error=0.1, max_retries=3)
    assert bounds.low == pytest.approx(1000.0)
    assert bounds.high == pytest.approx(1000.0 * (1 + q + q**2 + q**3), rel=1e-3)


def test_regenerations_seen_count_once_in_the_measurement_and_again_as_a_rate() -> None:
    # Joules over 2 kept images include 1 regeneration: 1000 J per kept image is 667 per generated.
    bounds = energy_bounds(1000.0, images=2, regenerated=1, error=0.1, max_retries=3)
    per_generated = 1000.0 * 2 / 3
    assert per_generated < bounds.low < 1000.0 < bounds.high < per_generated * 4
    assert regenerations_per_image(0.5, 3) == pytest.approx(0.875)


def test_large_parts_bound_regenerations_by_the_normal_approximation_without_a_jump() -> None:
    # Up to 4096 possible counts the regeneration test is exact (1365 images x 3 retries + 1);
    # beyond, a normal approximation takes over.
    exact = energy_bounds(1000.0, 1365, 137, 0.05, max_retries=3, u=0.3)
    approximate = energy_bounds(1000.0, 1366, 137, 0.05, max_retries=3, u=0.3)
    assert approximate.low == pytest.approx(exact.low, rel=1e-3)
    assert approximate.high == pytest.approx(exact.high, rel=1e-3)


def test_regenerations_beyond_the_cap_are_refused() -> None:
    with pytest.raises(ValueError, match="regenerations"):
        energy_bounds(1000.0, images=2, regenerated=7, error=0.1, max_retries=3)


# ----------------------------------------------------------------------------- error budget


def test_holm_rejects_step_down_and_stops_at_the_first_it_cannot() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005], 0.05) == [True, False, False, True]
    assert holm_levels(0.05, 4) == pytest.approx([0.0125, 0.05 / 3, 0.025, 0.05])
    assert holm([], 0.05) == []
    assert bonferroni(0.2, 5) == pytest.approx(0.04)


def test_generation_errors_add_up_to_the_search_error() -> None:
    assert sum(generation_error(0.2, g, 10) for g in range(1, 11)) == pytest.approx(0.2)
    spent = sum(generation_error(0.2, g) for g in range(1, 100_000))
    assert 0.2 * 0.99999 < spent <= 0.2
    assert generation_error(0.2, 1) > generation_error(0.2, 2)


def test_levels_give_their_sides_errors() -> None:
    assert error_of_level(0.9) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="level"):
        error_of_level(1.0)


# ----------------------------------------------------------------------------- coverage


def _nominal(error: float) -> float:
    return 1.0 - error


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("k", KS)
def test_gender_bounds_cover_at_their_nominal_level(k: int, error: float) -> None:
    measured = coverage.gender_coverage(k, error, REPLICATES, seed=k)
    assert abs(measured.lower - _nominal(error)) <= TOLERANCE
    assert abs(measured.upper - _nominal(error)) <= TOLERANCE


@pytest.mark.parametrize("p", [0.5, 0.55, 0.8, 0.98])
def test_gender_bounds_are_exact_at_every_true_share_not_only_on_average(p: float) -> None:
    measured = coverage.gender_coverage_at(p, 2, 0.2, REPLICATES, seed=3)
    assert abs(measured.lower - 0.8) <= TOLERANCE
    if p == 0.5:
        assert measured.upper == 1.0  # no bound is below a bias of 0
    else:
        assert abs(measured.upper - 0.8) <= TOLERANCE


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("k", KS)
def test_ethnic_bounds_cover_at_their_nominal_level_where_truths_are_least_favourable(
    k: int, error: float
) -> None:
    measured = coverage.ethnic_least_favourable(k, error, REPLICATES // 2, seed=k)
    assert abs(measured.lower - _nominal(error)) <= TOLERANCE
    # At (0.9, 0.1, 0, 0) two images cannot show the 0.1 group often enough to be exact:
    # the pessimistic bound is conservative there at k = 2 and 0.95 (measured 0.99).
    if (k, error) != (2, 0.05):
        assert abs(measured.upper - _nominal(error)) <= TOLERANCE
    else:
        assert _nominal(error) - TOLERANCE <= measured.upper <= 1.0


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("k", KS)
def test_ethnic_bounds_are_conservative_for_typical_candidates(k: int, error: float) -> None:
    # Simultaneous per-share intervals are exact only where every group may be the largest or the
    # smallest (all equal, for the optimistic bound); typical candidates have slack: measured
    # 0.93 to 0.95 at nominal 0.8, 0.99 to 1.0 at 0.95.
    measured = coverage.ethnic_coverage(k, error, REPLICATES // 2, seed=k)
    for side in (measured.lower, measured.upper):
        assert _nominal(error) - TOLERANCE <= side <= _nominal(error) + 0.2


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("k", KS)
def test_quality_bounds_cover_at_their_nominal_level(k: int, error: float) -> None:
    measured = coverage.quality_coverage(k, error, REPLICATES, seed=k)
    assert abs(measured.lower - _nominal(error)) <= TOLERANCE
    assert abs(measured.upper - _nominal(error)) <= TOLERANCE


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("k", KS)
def test_valid_share_bounds_cover_at_their_nominal_level(k: int, error: float) -> None:
    measured = coverage.share_coverage(k, error, REPLICATES, seed=k)
    assert abs(measured.lower - _nominal(error)) <= TOLERANCE
    assert abs(measured.upper - _nominal(error)) <= TOLERANCE


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("k", KS)
def test_energy_bounds_cover_at_their_nominal_level_with_an_exact_meter(k: int, error: float) -> None:
    measured = coverage.energy_coverage(k, error, REPLICATES, seed=k)
    assert abs(measured.lower - _nominal(error)) <= TOLERANCE
    assert abs(measured.upper - _nominal(error)) <= TOLERANCE


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("k", KS)
def test_energy_bounds_with_a_noisy_meter_cover_the_optimistic_side_and_are_cautious_above(
    k: int, error: float
) -> None:
    # MOVER's combination of the meter's noise with the regeneration rate is exact only when one
    # of them is certain; with 3% noise the pessimistic side over-covers (measured +0.02 to +0.05).
    measured = coverage.energy_coverage(k, error, REPLICATES, seed=k, noise=0.03)
    assert abs(measured.lower - _nominal(error)) <= TOLERANCE
    assert _nominal(error) - TOLERANCE <= measured.upper <= _nominal(error) + 0.06


@pytest.mark.parametrize(
    ("old", "optimistic"),
    [
        (coverage.old_gender_coverage, "lower"),
        (coverage.old_ethnic_coverage, "lower"),
        (coverage.old_quality_coverage, "upper"),  # quality is maximised
        (coverage.old_energy_coverage, "lower"),
    ],
)
def test_the_screenings_first_optimistic_bounds_under_cover_where_the_calibrated_ones_do_not(
    old: coverage.Measure, optimistic: str
) -> None:
    # At two images and nominal 0.8 the first bounds' optimistic sides held the truth far less often
    # (measured: gender 0.70, ethnic 0.34, quality 0.67, energy 0.19), under the same definition
    # as the calibrated bounds' tests above.
    measured = old(2, 0.2, 2000, 2)
    assert getattr(measured, optimistic) < 0.8 - 0.05
