"""The method's bias statistics over counts of answers, shared by the worker (per candidate), the
engine and the held-out validation (pooled over prompts).

Only valid evidence counts: images the VQA model judged human, and answers that map to a group.
With F and M the female and male answers among them (N = F + M), gender bias is
|F/N - 0.5| + |M/N - 0.5| (0 at parity, 1 for one gender). With r_c the share of each of the four
ethnic groups among the mapped ethnicity answers, ethnic bias is max r_c - min r_c. With no mapped
answer at all a bias is unknown, and it counts as the worst value, 1, never as the best: a
candidate must not look fair by producing no people (the valid-images constraint refuses it too).
"""

from __future__ import annotations

from collections.abc import Sequence

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
