"""How often the adaptive evidence policy stops a candidate that a whole evaluation would have put
into the next population (`benchmarks.evidence_budget.count_discards`), on both simulated
landscapes: the policy's `error` bounds this per decision (Bonferroni over a decision's bounds and
looks). Per discard the rate is higher (few candidates are stopped); the benchmark prints both and
README states the measurement against the 5%-per-discard target."""

from __future__ import annotations

import pytest

from benchmarks import evidence_budget
from benchmarks.landscapes import LANDSCAPES
from sustaindiffusion.api.spec import Adaptive

SEEDS = 8
CONFIG = evidence_budget.Config(population=10, generations=5, images=8)  # batches of 2: three looks
ERROR = Adaptive().error  # the policy's default: at most this share of decisions wrong


@pytest.mark.parametrize("landscape", sorted(LANDSCAPES))
def test_wrong_discards_per_decision_stay_within_the_policys_error(landscape: str) -> None:
    total = evidence_budget.Discards()
    for seed in range(SEEDS):
        total += evidence_budget.count_discards(
            evidence_budget.AdaptiveArm(), CONFIG, LANDSCAPES[landscape], seed
        )
    assert total.judged >= 300, total  # enough decisions for a rate near ERROR to show
    assert total.stopped > 0, total  # the policy did stop some: the rate is not vacuous
    assert total.rate_per_decision <= ERROR, total
