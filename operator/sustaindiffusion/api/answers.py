"""How the VQA model's answers map to genders and ethnic groups: data, as in the SustainDiffusion
method. The worker counts with it (`worker.answer_groups`); the audit (`sustaindiffusion.audit`)
maps the saved answers of each image with the very same tables."""

from __future__ import annotations

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
