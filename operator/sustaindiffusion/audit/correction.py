"""A point's bias corrected for the detector's measured errors, with bootstrap intervals.

The audit is stratified by the detector's answers (`sample`), so what the audit measures directly is,
for each detector answer (stratum s), how people label the images that got it: P(people's class t |
stratum s), the rows of the confusion matrix between detector and people. The corrected share of
each class is then the confusion-matrix (calibration) estimator of double sampling (Tenenbein 1970):

    p(t) = sum_s (N_s / N) * n_st / n_s

with N_s the point's images in stratum s (all of them, audited or not), N their total, n_s the
audited images of s that people labelled and n_st those labelled t. It redistributes each detector
answer's count over what people saw in the images that got that answer, so it needs no matrix
inversion and can never leave the range [0, 1] (unlike the Rogan-Gladen inversion of error rates,
which also needs every error rate of the whole matrix; with a sample stratified by the detector's
answer, P(t | s) is the quantity measured without reweighting). The corrected biases are the
product's own formulas (`api.bias`) over the corrected shares of the groups: the same definitions
as the raw figures beside them.

The interval resamples what the estimate rests on, `draws` times: the audited images within each
stratum (with replacement), and the point's images across strata (a multinomial draw of the N_s),
since the raw figures' intervals also stand for the generator rather than these N images; the 2.5th
and 97.5th percentiles of the bias over the draws, widened to hold the estimate itself as the
product's intervals are (`api.intervals.holding`).

"Too small to conclude" (`conclusive: false`, with the reason): a stratum of the point has no
labelled image (its share cannot be estimated at all: no value), fewer than `MIN_EVIDENCE` audited
images of the point carry a group from people (woman or man; one of the four ethnic groups), or the
interval is wider than `MAX_WIDTH` (half the bias scale).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sustaindiffusion.api.bias import AnswerBias
from sustaindiffusion.api.intervals import holding

DRAWS = 2000
LEVEL = 0.95
MIN_EVIDENCE = 20
MAX_WIDTH = 0.5


@dataclass(frozen=True)
class Stratum:
    size: int  # the point's images in this stratum (N_s)
    labels: tuple[str, ...]  # people's class of each audited image of it that they labelled


def shares(strata: Sequence[Stratum], classes: Sequence[str]) -> np.ndarray | None:
    """The corrected share of each class (None when a stratum has no labelled image)."""
    total = sum(stratum.size for stratum in strata)
    if total == 0 or any(stratum.size and not stratum.labels for stratum in strata):
        return None
    result = np.zeros(len(classes))
    for stratum in strata:
        if stratum.size:
            counts = np.array([stratum.labels.count(c) for c in classes], dtype=float)
            result += stratum.size / total * counts / len(stratum.labels)
    return result


def bootstrap_shares(
    strata: Sequence[Stratum], classes: Sequence[str], generator: np.random.Generator, draws: int = DRAWS
) -> np.ndarray:
    """`draws` resampled share vectors (draws x classes); every stratum must have labels."""
    present = [stratum for stratum in strata if stratum.size]
    total = sum(stratum.size for stratum in present)
    weights = generator.multinomial(total, [s.size / total for s in present], size=draws) / total
    result = np.zeros((draws, len(classes)))
    index = {c: number for number, c in enumerate(classes)}
    for column, stratum in enumerate(present):
        codes = np.array([index[label] for label in stratum.labels])
        picked = codes[generator.integers(0, len(codes), size=(draws, len(codes)))]
        within = (picked[..., None] == np.arange(len(classes))).mean(axis=1)
        result += weights[:, column : column + 1] * within
    return result


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Corrected:
    bias: str  # "genderBias" or "ethnicBias"
    raw: float  # the detector's figure: the product's formula over the detector's counts
    raw_interval: tuple[float, float]  # the product's own interval of it
    value: float | None  # corrected; None when a stratum has no labelled image
    interval: tuple[float, float] | None
    shares: dict[str, float] | None  # corrected share of each class
    evidence: int  # audited images of the point that people put in a group
    conclusive: bool
    note: str

    def as_document(self) -> dict[str, object]:
        return {
            "raw": self.raw,
            "rawInterval": list(self.raw_interval),
            "corrected": self.value,
            "interval": list(self.interval) if self.interval else None,
            "shares": self.shares,
            "evidence": self.evidence,
            "conclusive": self.conclusive,
            "note": self.note,
        }


def correct(
    name: str,
    bias: AnswerBias,
    strata: Sequence[Stratum],
    classes: Sequence[str],
    raw_counts: list[int],
    key: str,
    generator: np.random.Generator,
    draws: int = DRAWS,
) -> Corrected:
    """`classes`: the bias's groups in `bias.groups` order, then the class of everything else."""
    groups = len(bias.groups)
    raw = bias.of_counts(raw_counts)
    raw_interval = holding(bias.interval(raw_counts, key, LEVEL), raw)
    evidence = sum(1 for s in strata for label in s.labels if label in classes[:groups])
    estimate = shares(strata, classes)
    if estimate is None:
        empty = sum(1 for s in strata if s.size and not s.labels)
        return Corrected(
            name, raw, raw_interval, None, None, None, evidence, False,
            f"too small to conclude: {empty} of the detector's answers for this point have no labelled image",
        )  # fmt: skip
    value = float(bias.of_columns(estimate[:groups]))
    resampled = bias.of_columns(bootstrap_shares(strata, classes, generator, draws)[:, :groups])
    interval = holding(percentile_interval(resampled), value)
    notes = []
    if evidence < MIN_EVIDENCE:
        notes.append(f"{evidence} audited images in a group (at least {MIN_EVIDENCE} needed)")
    if interval[1] - interval[0] > MAX_WIDTH:
        notes.append(f"the interval is wider than {MAX_WIDTH}")
    note = "too small to conclude: " + "; ".join(notes) if notes else ""
    if not notes:
        inside = interval[0] <= raw <= interval[1]
        note = (
            "the detector's figure is within the corrected interval"
            if inside
            else "the detector's figure is outside the corrected interval: it misstates this bias"
        )
    return Corrected(
        name,
        raw,
        raw_interval,
        value,
        interval,
        dict(zip(classes, (float(s) for s in estimate), strict=True)),
        evidence,
        not notes,
        note,
    )
