"""The audit's statistics against values computed by hand, and the corrected biases' intervals
against their nominal coverage by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from sustaindiffusion.api.bias import ETHNIC, GENDER, gender_bias
from sustaindiffusion.audit import agreement, correction
from sustaindiffusion.audit.correction import Stratum
from sustaindiffusion.audit.scheme import ETHNIC_CLASSES, GENDER_CLASSES


def test_cohen_kappa_of_a_two_by_two_table() -> None:
    """20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no: observed agreement 35/50 = 0.7; chance
    (25*30 + 25*20)/50^2 = 0.5; kappa (0.7 - 0.5) / (1 - 0.5) = 0.4."""
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    result = agreement.kappa(first, second, ("yes", "no", "unclear"))
    assert result.value == pytest.approx(0.4)
    assert result.items == 50
    assert result.conclusive
    assert result.stderr is not None
    assert result.stderr > 0


def test_cohen_kappa_of_three_categories() -> None:
    """Rows (first rater) woman 4/1/0, man 1/3/1, can't tell 0/0/0 over columns woman, man, can't
    tell: observed 7/10; marginals first (5, 5, 0), second (5, 4, 1); chance (25 + 20 + 0)/100 =
    0.45; kappa (0.7 - 0.45) / 0.55 = 5/11."""
    pairs = [("woman", "woman")] * 4 + [("woman", "man")] + [("man", "woman")] + [("man", "man")] * 3
    pairs += [("man", "cant_tell")]
    result = agreement.kappa([a for a, _ in pairs], [b for _, b in pairs], ("woman", "man", "cant_tell"))
    assert result.value == pytest.approx(5 / 11)
    assert not result.conclusive  # 10 images: too small to conclude
    assert "too small to conclude" in result.note


def test_kappa_is_undefined_without_variation() -> None:
    result = agreement.kappa(["yes"] * 30, ["yes"] * 30, ("yes", "no"))
    assert result.value is None
    assert not result.conclusive
    assert "one category" in result.note


def test_krippendorff_alpha_nominal_by_hand() -> None:
    """Three raters, three images: (a, a, a), (a, a, b), (b, b, b). Coincidences o_aa = 3 + 1,
    o_ab = o_ba = 1, o_bb = 3 (each image's ordered pairs over m - 1 = 2); n = 9, n_a = 5, n_b = 4.
    Observed disagreement 2/9, expected 2 * 5 * 4 / (9 * 8) = 5/9; alpha = 1 - (2/9)/(5/9) = 0.6."""
    ratings: list[list[str | None]] = [["a", "a", "b"], ["a", "a", "b"], ["a", "b", "b"]]
    result = agreement.alpha(ratings, ("a", "b", "c"))
    assert result.value == pytest.approx(0.6)
    assert result.items == 3


def test_krippendorff_alpha_skips_missing_ratings() -> None:
    """The same images with a fourth image only one rater rated: it pairs with no one and changes nothing."""
    ratings: list[list[str | None]] = [["a", "a", "b", "a"], ["a", "a", "b", None], ["a", "b", "b", None]]
    result = agreement.alpha(ratings, ("a", "b"))
    assert result.value == pytest.approx(0.6)
    assert result.items == 3


def test_confusion_counts_rows_against_columns() -> None:
    table = agreement.confusion(["yes", "yes", "no"], ["yes", "no", "no"], ("yes", "no"))
    assert table.tolist() == [[1, 1], [0, 1]]


def test_corrected_shares_by_hand() -> None:
    """The detector said woman for 60 images and man for 40. People labelled 4 of the first (3
    women, 1 man) and 4 of the second (2 men, 2 with no person): p(woman) = 0.6 * 3/4 = 0.45,
    p(man) = 0.6 * 1/4 + 0.4 * 2/4 = 0.35, p(other) = 0.4 * 2/4 = 0.2."""
    strata = [
        Stratum(60, ("woman", "woman", "woman", "man")),
        Stratum(40, ("man", "man", "other", "other")),
    ]
    shares = correction.shares(strata, GENDER_CLASSES)
    assert shares is not None
    assert shares.tolist() == pytest.approx([0.45, 0.35, 0.2])
    # The product's formula over the groups' shares: 0.45/0.8 = 0.5625 women -> 0.125.
    result = correction.correct(
        "genderBias", GENDER, strata, GENDER_CLASSES, [60, 40], "key", np.random.default_rng(0), 500
    )
    assert result.raw == pytest.approx(gender_bias(60, 40))
    assert result.raw == pytest.approx(0.2)
    assert result.value == pytest.approx(0.125)
    assert result.interval is not None
    assert result.interval[0] <= 0.125 <= result.interval[1]
    assert not result.conclusive  # 6 images in a group
    assert "too small to conclude" in result.note


def test_corrected_ethnic_bias_by_hand() -> None:
    """One detector answer (white, 100 images); people: 2 white, 1 asian, 1 black of 4 -> shares
    0.5, 0.25, 0.25, 0 -> ethnic bias 0.5 - 0 = 0.5."""
    strata = [Stratum(100, ("white", "white", "asian", "black"))]
    result = correction.correct(
        "ethnicBias", ETHNIC, strata, ETHNIC_CLASSES, [100, 0, 0, 0], "k", np.random.default_rng(0), 500
    )
    assert result.raw == pytest.approx(1.0)
    assert result.value == pytest.approx(0.5)
    assert result.shares == pytest.approx(
        {"white": 0.5, "asian": 0.25, "black": 0.25, "arab": 0.0, "other": 0.0}
    )


def test_an_unlabelled_detector_answer_leaves_no_estimate() -> None:
    strata = [Stratum(50, ("woman",)), Stratum(5, ())]
    assert correction.shares(strata, GENDER_CLASSES) is None
    result = correction.correct(
        "genderBias", GENDER, strata, GENDER_CLASSES, [50, 5], "k", np.random.default_rng(0), 200
    )
    assert result.value is None
    assert result.interval is None
    assert not result.conclusive
    assert "1 of the detector's answers" in result.note


def test_enough_evidence_concludes() -> None:
    strata = [Stratum(100, ("woman",) * 15 + ("man",) * 15), Stratum(100, ("man",) * 25 + ("woman",) * 5)]
    result = correction.correct(
        "genderBias", GENDER, strata, GENDER_CLASSES, [100, 100], "k", np.random.default_rng(1), 1000
    )
    assert result.conclusive
    assert result.value == pytest.approx(abs(2 * (0.5 * 0.5 + 0.5 * 5 / 30) - 1))


# Interval coverage by simulation: a generator with known shares, a detector with known errors,
# the point's images and a stratified audit drawn afresh each time; how often does the 95%
# interval hold the generator's true bias?
TRUE_SHARES = {"gender": np.array([0.55, 0.30, 0.15]), "ethnic": np.array([0.45, 0.25, 0.15, 0.05, 0.10])}
# P(detector answer | true class): rows true classes, columns detector answers (the last: no group).
DETECTOR = {
    "gender": np.array([[0.80, 0.10, 0.10], [0.15, 0.75, 0.10], [0.30, 0.30, 0.40]]),
    "ethnic": np.array(
        [
            [0.80, 0.05, 0.05, 0.05, 0.05],
            [0.10, 0.70, 0.05, 0.05, 0.10],
            [0.10, 0.05, 0.75, 0.05, 0.05],
            [0.20, 0.05, 0.05, 0.60, 0.10],
            [0.25, 0.20, 0.15, 0.10, 0.30],
        ]
    ),
}


def _coverage(kind: str, images: int, per_stratum: int, simulations: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    truth_shares, errors = TRUE_SHARES[kind], DETECTOR[kind]
    bias, classes = (GENDER, GENDER_CLASSES) if kind == "gender" else (ETHNIC, ETHNIC_CLASSES)
    groups = len(bias.groups)
    true_bias = float(bias.of_columns(truth_shares[:groups]))
    held = 0
    for _ in range(simulations):
        truth = rng.choice(len(classes), size=images, p=truth_shares)
        said = np.array([rng.choice(len(classes), p=errors[t]) for t in truth])
        strata = []
        for answer in range(len(classes)):
            members = np.flatnonzero(said == answer)
            if not len(members):
                continue
            audited = rng.choice(members, size=min(per_stratum, len(members)), replace=False)
            strata.append(Stratum(len(members), tuple(classes[t] for t in truth[audited])))
        raw = [int((said == g).sum()) for g in range(groups)]
        result = correction.correct(kind, bias, strata, classes, raw, "k", rng, 400)
        assert result.interval is not None
        held += result.interval[0] <= true_bias <= result.interval[1]
    return held / simulations


@pytest.mark.parametrize("kind", ["gender", "ethnic"])
def test_corrected_intervals_hold_the_true_bias_about_95_percent_of_the_time(kind: str) -> None:
    coverage = _coverage(kind, images=400, per_stratum=40, simulations=300, seed=7)
    # 300 simulations: the measured coverage's standard error at 95% is 1.3 points.
    assert 0.90 <= coverage <= 0.99, f"{kind}: measured coverage {coverage:.3f}, nominal 0.95"
