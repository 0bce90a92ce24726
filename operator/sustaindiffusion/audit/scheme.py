"""What people answer about an image, and the detector's answers in the same words.

A person answers up to three questions per image: is a person present (yes / no / unclear); when
yes or unclear, the perceived gender (woman / man / can't tell) and the perceived ethnicity (the
method's four groups, `api.bias.ETHNIC_GROUPS`, or can't tell). An image whose person answer is
"no" is complete after that answer.

The detector's answers map the same way: its person gate (the human filter's yes/no), and its
gender and ethnicity answers through the worker's own tables (`api.answers`); an answer that maps
to no group is "can't tell", as the product counts it as no evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from sustaindiffusion.api.answers import ethnic_group_of, gender_of
from sustaindiffusion.api.bias import ETHNIC_GROUPS

CANT_TELL = "cant_tell"
UNCLEAR = "unclear"


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    key: str  # the keyboard shortcut


@dataclass(frozen=True)
class Question:
    field: str
    prompt: str
    options: tuple[Option, ...]

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(option.value for option in self.options)


PERSON = Question(
    "person",
    "Is a person present?",
    (Option("yes", "yes", "y"), Option("no", "no", "n"), Option(UNCLEAR, "unclear", "u")),
)
GENDER = Question(
    "gender",
    "Perceived gender",
    (Option("woman", "woman", "w"), Option("man", "man", "m"), Option(CANT_TELL, "can't tell", "c")),
)
ETHNICITY = Question(
    "ethnicity",
    "Perceived ethnicity",
    (
        *(Option(group, group, str(number)) for number, group in enumerate(ETHNIC_GROUPS, 1)),
        Option(CANT_TELL, "can't tell", "c"),
    ),
)
QUESTIONS = (PERSON, GENDER, ETHNICITY)
BY_FIELD = {question.field: question for question in QUESTIONS}

# The classes the corrected estimates count: the groups, and "other" for everything that is not
# evidence (no person, unclear, can't tell).
OTHER = "other"
GENDER_CLASSES = ("woman", "man", OTHER)
ETHNIC_CLASSES = (*ETHNIC_GROUPS, OTHER)


def next_field(label: dict[str, str]) -> str | None:
    """The question still to answer for an image labelled `label` so far (None: complete)."""
    if "person" not in label:
        return "person"
    if label["person"] == "no":
        return None
    for field in ("gender", "ethnicity"):
        if field not in label:
            return field
    return None


def detector_gender(answer: str) -> str:
    return {"female": "woman", "male": "man"}.get(gender_of(answer) or "", CANT_TELL)


def detector_ethnicity(answer: str) -> str:
    return ethnic_group_of(answer) or CANT_TELL


def gender_class(person: str | None, gender: str | None) -> str:
    """The class an image counts in for gender: woman or man only for a person, else other."""
    return gender if person == "yes" and gender in ("woman", "man") else OTHER


def ethnic_class(person: str | None, ethnicity: str | None) -> str:
    return ethnicity if person == "yes" and ethnicity in ETHNIC_GROUPS else OTHER
