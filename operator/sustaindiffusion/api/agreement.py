"""How far the detector and its cross-check (`spec.scoring.crossCheck`) agree on a candidate's images.

A result carries counts (`Metrics.cross_check_*`), so the parts of a candidate add up exactly; the
shares are taken here:

- person gate: the images on which both families give the same yes/no, of all images;
- gender and ethnicity: the images both answer alike (a "can't tell" or an answer that maps to no
  group is a label of its own, so two can't-tells agree), of the images both call a person.

A candidate's disagreement is the largest of the three shares of disagreement that have images to
rest on; above `maxDisagreement` it is a warning (the report, the DetectorsDisagree condition).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sustaindiffusion.api.results import EvaluationResult, Metrics


@dataclass(frozen=True)
class Agreement:
    images: int
    person_agreed: int
    persons: int  # images both families call a person
    gender_agreed: int
    ethnicity_agreed: int

    @classmethod
    def of(cls, metrics: Metrics) -> Agreement | None:
        """The cross-check's counts of a result, or None where it had no cross-check."""
        counts = (
            metrics.cross_check_person_agreed,
            metrics.cross_check_persons,
            metrics.cross_check_gender_agreed,
            metrics.cross_check_ethnicity_agreed,
        )
        if any(count is None for count in counts):
            return None
        person, persons, gender, ethnicity = (int(count or 0) for count in counts)
        return cls(metrics.images, person, persons, gender, ethnicity)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per question, the images the detectors agreed on and the images compared."""
        return {
            "person": (self.person_agreed, self.images),
            "gender": (self.gender_agreed, self.persons),
            "ethnicity": (self.ethnicity_agreed, self.persons),
        }

    def shares(self) -> dict[str, float | None]:
        """The share of agreement on each question (None where no image was compared)."""
        return {name: agreed / of if of else None for name, (agreed, of) in self.counts().items()}

    @property
    def disagreement(self) -> float | None:
        """The largest share of disagreement over the questions compared (None: none was)."""
        shares = [1.0 - share for share in self.shares().values() if share is not None]
        return max(shares) if shares else None

    def exceeds(self, limit: float) -> bool:
        disagreement = self.disagreement
        return disagreement is not None and disagreement > limit

    def describe(self) -> str:
        """e.g. 'person 95% (19/20), gender 80% (12/15), ethnicity 60% (9/15)'."""
        return ", ".join(
            f"{name} {agreed / of:.0%} ({agreed}/{of})" if of else f"{name} -"
            for name, (agreed, of) in self.counts().items()
        )


def disagreeing(results: Iterable[EvaluationResult], limit: float) -> list[tuple[str, Agreement]]:
    """The results whose detectors disagree more than `limit`, most disagreeing first (then by id)."""
    found = []
    for result in results:
        agreement = Agreement.of(result.metrics) if result.metrics is not None else None
        if agreement is not None and agreement.exceeds(limit):
            found.append((result.candidate_id, agreement))
    return sorted(found, key=lambda item: (-(item[1].disagreement or 0.0), item[0]))
