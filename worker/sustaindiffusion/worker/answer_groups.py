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


@dataclass(frozen=True)
class ImageAgreement:
    """Whether two detector families answer one image alike: the person gate always; gender and
    ethnicity only where both call it a person (else None), each answer read as its group, and an
    answer of no group (a can't-tell, an unmapped word) as a label of its own."""

    person: bool
    gender: bool | None
    ethnicity: bool | None


def image_agreement(first: tuple[bool, str, str], second: tuple[bool, str, str]) -> ImageAgreement:
    """`first` and `second`: each family's (person gate, gender answer, ethnicity answer)."""
    (human_a, gender_a, ethnicity_a), (human_b, gender_b, ethnicity_b) = first, second
    if not (human_a and human_b):
        return ImageAgreement(human_a == human_b, None, None)
    return ImageAgreement(
        True,
        gender_of(gender_a) == gender_of(gender_b),
        ethnic_group_of(ethnicity_a) == ethnic_group_of(ethnicity_b),
    )


@dataclass(frozen=True)
class AgreementCounts:
    """A candidate's agreement between the detector and its cross-check, as `Metrics` carries it."""

    person_agreed: int
    persons: int  # images both call a person
    gender_agreed: int
    ethnicity_agreed: int


def count_agreement(images: Sequence[ImageAgreement]) -> AgreementCounts:
    compared = [image for image in images if image.gender is not None]
    return AgreementCounts(
        person_agreed=sum(image.person for image in images),
        persons=len(compared),
        gender_agreed=sum(bool(image.gender) for image in compared),
        ethnicity_agreed=sum(bool(image.ethnicity) for image in compared),
    )
