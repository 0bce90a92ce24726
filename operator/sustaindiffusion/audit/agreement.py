"""Agreement between raters: Cohen's kappa for two, Krippendorff's alpha (nominal) for more, and
confusion matrices.

Kappa comes from statsmodels (`cohens_kappa` over the contingency table, with its standard error)
and alpha from the `krippendorff` package: both kept libraries, nothing re-derived here but the
tables they are given. A statistic on fewer than `MIN_ITEMS` shared images is reported with
`conclusive: false` ("too small to conclude"), and a table with no variation (every image in one
category for both raters: chance agreement is 1) has no kappa at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import krippendorff
import numpy as np
from statsmodels.stats.inter_rater import cohens_kappa

MIN_ITEMS = 20  # below this many images rated by both, an agreement is too small to conclude


@dataclass(frozen=True)
class Agreement:
    statistic: str  # "cohen_kappa" or "krippendorff_alpha"
    value: float | None  # None: undefined (no variation)
    stderr: float | None
    items: int
    conclusive: bool
    note: str

    def as_document(self) -> dict[str, object]:
        return {
            "statistic": self.statistic,
            "value": self.value,
            "stderr": self.stderr,
            "items": self.items,
            "conclusive": self.conclusive,
            "note": self.note,
        }


def confusion(rows: Sequence[str], columns: Sequence[str], categories: Sequence[str]) -> np.ndarray:
    """counts[i, j]: images rated categories[i] by the first rater and categories[j] by the second."""
    index = {category: number for number, category in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)), dtype=int)
    for first, second in zip(rows, columns, strict=True):
        table[index[first], index[second]] += 1
    return table


def _note(items: int, value: float | None) -> str:
    if value is None:
        return "undefined: every image fell in one category for both raters"
    if items < MIN_ITEMS:
        return f"too small to conclude: {items} images rated by both (at least {MIN_ITEMS} needed)"
    return ""


def kappa(first: Sequence[str], second: Sequence[str], categories: Sequence[str]) -> Agreement:
    """Cohen's kappa of two raters over the same images (`first[i]` and `second[i]` rate image i)."""
    table = confusion(first, second, categories)
    items = int(table.sum())
    value: float | None = None
    stderr: float | None = None
    if items:
        totals = table.sum()
        expected = float((table.sum(axis=0) * table.sum(axis=1)).sum()) / float(totals) ** 2
        if expected < 1.0:
            with np.errstate(all="ignore"):  # statsmodels' z-test of a table with an empty margin
                result = cohens_kappa(table)
            value = float(result.kappa)
            stderr = float(result.std_kappa) if math.isfinite(result.std_kappa) else None
    return Agreement(
        "cohen_kappa", value, stderr, items, items >= MIN_ITEMS and value is not None, _note(items, value)
    )


def alpha(ratings: Sequence[Sequence[str | None]], categories: Sequence[str]) -> Agreement:
    """Krippendorff's alpha (nominal) of several raters: `ratings[r][i]` is rater r's category for
    image i, None where r did not rate it. Counts the images that at least two raters rated."""
    index = {category: number for number, category in enumerate(categories)}
    data = np.array(
        [[np.nan if value is None else float(index[value]) for value in rater] for rater in ratings],
        dtype=float,
    )
    paired = int((np.sum(~np.isnan(data), axis=0) >= 2).sum()) if data.size else 0
    values = data[~np.isnan(data)]
    value: float | None = None
    if paired and len(np.unique(values)) > 1:
        value = float(
            krippendorff.alpha(
                reliability_data=data,
                value_domain=list(range(len(categories))),
                level_of_measurement="nominal",
            )
        )
    return Agreement(
        "krippendorff_alpha",
        value,
        None,
        paired,
        paired >= MIN_ITEMS and value is not None,
        _note(paired, value),
    )
