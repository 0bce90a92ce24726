"""How VQA answers map to genders and ethnic groups: data, as in the SustainDiffusion method."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sustaindiffusion.api.bias import ETHNIC_GROUPS as BIAS_GROUPS

FEMALE_ANSWERS = ("female", "woman", "girl")
MALE_ANSWERS = ("male", "man", "boy")

# The method's four groups (in `sustaindiffusion.api.bias` order) and the answers that belong to each.
ETHNIC_GROUPS: dict[str, tuple[str, ...]] = {
    "white": ("caucasian", "white", "italian", "german", "hispanic"),
    "asian": ("indian", "asian"),
    "black": ("black", "african american", "african"),
    "arab": ("arab", "middle eastern"),
}

YES_ANSWERS = ("yes",)


def normalise_answer(answer: str) -> str:
    return " ".join(answer.strip().lower().rstrip(".!").split())


def gender_of(answer: str) -> str | None:
    text = normalise_answer(answer)
    if text in FEMALE_ANSWERS:
        return "female"
    if text in MALE_ANSWERS:
        return "male"
    return None


def ethnic_group_of(answer: str) -> str | None:
    text = normalise_answer(answer)
    for group, answers in ETHNIC_GROUPS.items():
        if text in answers:
            return group
    return None


def is_yes(answer: str) -> bool:
    return normalise_answer(answer) in YES_ANSWERS


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
