"""What per-prompt wins and losses support: the sign test against scipy's binomial test, the Wilson
interval against its textbook values, and the one line a user reads."""

from __future__ import annotations

import pytest
from scipy import stats

from sustaindiffusion.search.prompt_counts import fewest_decided, sign_test, verdict, wilson


@pytest.mark.parametrize(("wins", "losses"), [(3, 1), (6, 0), (0, 6), (10, 2), (5, 5), (1, 0), (17, 31)])
def test_the_sign_test_is_scipys_exact_binomial_test(wins: int, losses: int) -> None:
    assert sign_test(wins, losses) == pytest.approx(stats.binomtest(wins, wins + losses, 0.5).pvalue)


def test_nothing_decided_is_no_evidence() -> None:
    assert sign_test(0, 0) == 1.0
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("successes", "total"), [(8, 10), (0, 10), (10, 10), (3, 4), (27, 55)])
def test_the_wilson_interval_is_scipys(successes: int, total: int) -> None:
    reference = stats.binomtest(successes, total).proportion_ci(method="wilson")
    assert wilson(successes, total) == pytest.approx((reference.low, reference.high))


def test_the_wilson_interval_of_a_textbook_share() -> None:
    low, high = wilson(8, 10)  # Newcombe (1998), method 3: 0.490 to 0.943
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)


def test_six_decided_prompts_are_the_fewest_that_can_be_significant() -> None:
    assert fewest_decided() == 6
    assert sign_test(5, 0) > 0.05 > sign_test(6, 0)


@pytest.mark.parametrize(
    ("counts", "says"),
    [
        ((3, 0, 1), "3 wins, 0 trades, 1 loss of 4 prompts"),
        ((3, 0, 1), "not significant at 5% (sign test p=0.62); with 4 decided prompts no count could be"),
        ((0, 4, 0), "no prompt decided either way"),
        ((8, 1, 0), "more wins than losses beyond chance at 5% (sign test p=0.0078)"),
        ((1, 2, 9), "more losses than wins beyond chance"),
        ((6, 2, 4), "not significant at 5% (sign test p=0.75): the counts cannot tell wins from losses"),
    ],
)
def test_one_line_says_what_the_counts_support(counts: tuple[int, int, int], says: str) -> None:
    assert says in verdict(*counts).line()
