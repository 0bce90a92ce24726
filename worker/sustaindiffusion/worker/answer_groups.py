"""How VQA answers map to genders and ethnic groups: data, as in the SustainDiffusion method."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The tables and the mapping live in the shared API (the audit maps saved answers with the same ones);
# the worker's modules import them from here.
from sustaindiffusion.api.answers import (
    ETHNIC_GROUPS,
    FEMALE_ANSWERS,
    MALE_ANSWERS,
    YES_ANSWERS,
    ethnic_group_of,
    gender_of,
    is_yes,
    normalise_answer,
)
from sustaindiffusion.api.bias import ETHNIC_GROUPS as BIAS_GROUPS

__all__ = [
    "ETHNIC_GROUPS",
    "FEMALE_ANSWERS",
    "MALE_ANSWERS",
    "YES_ANSWERS",
    "AnswerCounts",
    "count_answers",
    "ethnic_group_of",
    "gender_of",
    "is_yes",
    "normalise_answer",
]


@dataclass(frozen=True)
class AnswerCounts:
    """What the VQA answers of human images say, counted as the bias statistics need them."""

    human: int
    female: int
    male: int
    ethnic: tuple[int, ...]  # per group, in `sustaindiffusion.api.bias.ETHNIC_GROUPS` order


def count_answers(human: Sequence[bool], genders: Sequence[str], ethnicities: Sequence[str]) -> AnswerCounts:
    """Counts over the images judged human only; answers that map to no group are not evidence."""
    kept = [i for i, ok in enumerate(human) if ok]
    mapped_genders = [gender_of(genders[i]) for i in kept]
    groups = [ethnic_group_of(ethnicities[i]) for i in kept]
    return AnswerCounts(
        human=len(kept),
        female=mapped_genders.count("female"),
        male=mapped_genders.count("male"),
        ethnic=tuple(groups.count(group) for group in BIAS_GROUPS),
    )
