"""The method's bias statistics over counts of answers, shared by the worker (per candidate), the
engine and the held-out validation (pooled over prompts).

Only valid evidence counts: images the VQA model judged human, and answers that map to a group.
With F and M the female and male answers among them (N = F + M), gender bias is
|F/N - 0.5| + |M/N - 0.5| (0 at parity, 1 for one gender). With r_c the share of each of the four
ethnic groups among the mapped ethnicity answers, ethnic bias is max r_c - min r_c. With no mapped
answer at all a bias is unknown, and it counts as the worst value, 1, never as the best: a
candidate must not look fair by producing no people (the valid-images constraint refuses it too).

`GENDER` and `ETHNIC` state each bias once: the answer groups it counts (the `{group}_images`
fields of a result and of a held-out prompt's row), its formula over counts and over arrays of
counts, the credible interval of its posterior (`api.intervals`), and its calibrated bounds
(`api.bounds`: each side holds the true bias with probability 1 - error, tie-broken by the key).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sustaindiffusion.api.bounds import ethnic_bias_bounds, gender_bias_bounds, tiebreak
from sustaindiffusion.api.intervals import ethnic_bias_interval, gender_bias_interval

ETHNIC_GROUPS = ("white", "asian", "black", "arab")  # the method's groups (answers: the worker's table)
UNKNOWN_BIAS = 1.0


def gender_bias(female: int, male: int) -> float:
    mapped = female + male
    if mapped == 0:
        return UNKNOWN_BIAS
    return abs(female / mapped - 0.5) + abs(male / mapped - 0.5)


def ethnic_bias(counts: Sequence[int]) -> float:
    """`counts` of mapped answers per group, in `ETHNIC_GROUPS` order."""
    if len(counts) != len(ETHNIC_GROUPS):
        raise ValueError(f"expected {len(ETHNIC_GROUPS)} group counts, got {len(counts)}")
    mapped = sum(counts)
    if mapped == 0:
        return UNKNOWN_BIAS
    shares = [count / mapped for count in counts]
    return max(shares) - min(shares)


def _gender_bias_of_columns(counts: np.ndarray) -> np.ndarray:
    female, male = counts[..., 0], counts[..., 1]
    mapped = female + male
    safe = np.where(mapped > 0, mapped, 1.0)
    result: np.ndarray = np.where(
        mapped > 0, np.abs(female / safe - 0.5) + np.abs(male / safe - 0.5), UNKNOWN_BIAS
    )
    return result


def _ethnic_bias_of_columns(counts: np.ndarray) -> np.ndarray:
    mapped = counts.sum(axis=-1)
    safe = np.where(mapped > 0, mapped, 1.0)
    spread = (counts.max(axis=-1) - counts.min(axis=-1)) / safe
    result: np.ndarray = np.where(mapped > 0, spread, UNKNOWN_BIAS)
    return result


@dataclass(frozen=True)
class AnswerBias:
    """One bias over counts of mapped answers."""

    groups: tuple[str, ...]  # whose counts are the `{group}_images` fields
    of_counts: Callable[[Sequence[int]], float]
    of_columns: Callable[[np.ndarray], np.ndarray]  # any leading shape; the last axis: `groups`
    interval: Callable[[list[int], str, float], tuple[float, float]]  # (counts, key, level)
    bounds: Callable[[list[int], str, float], tuple[float, float]]  # (counts, key, one-sided error)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f"{group}_images" for group in self.groups)


def _gender_bias_bounds(counts: list[int], key: str, error: float) -> tuple[float, float]:
    bounds = gender_bias_bounds(counts[0], counts[1], error, tiebreak(key, 0))
    return bounds.low, bounds.high


def _ethnic_bias_bounds(counts: list[int], key: str, error: float) -> tuple[float, float]:
    ties = [tiebreak(key, 1 + group) for group in range(len(ETHNIC_GROUPS))]
    bounds = ethnic_bias_bounds(counts, error, ties)
    return bounds.low, bounds.high


GENDER = AnswerBias(
    ("female", "male"),
    lambda counts: gender_bias(counts[0], counts[1]),
    _gender_bias_of_columns,
    lambda counts, key, level: gender_bias_interval(counts[0], counts[1], key, level),
    _gender_bias_bounds,
)
ETHNIC = AnswerBias(
    ETHNIC_GROUPS, ethnic_bias, _ethnic_bias_of_columns, ethnic_bias_interval, _ethnic_bias_bounds
)
