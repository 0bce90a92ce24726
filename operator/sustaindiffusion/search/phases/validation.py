"""Held-out validation at the end (`spec.validation`): the model's defaults and the chosen front
points (`search.heldout.choose_points`: knee, extremes, spread) evaluated again on the held-out
prompts, with their own seeds in their own stream, one candidate per worker (its per-prompt rows
fill most of a termination message). Its results stay apart from the search's.

Its tasks say part whole on the wire, as workers from before this part read them (an unknown
part would be refused); their seed stream tells them apart."""

from __future__ import annotations

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SeedPolicy, ValidationSpec
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.heldout import choose_points
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.phases.base import ChosenOnce, Context, ImagePlan
from sustaindiffusion.search.reference import DEFAULTS_BASELINE

SEED_STREAM = Part.VALIDATION.value


def start(context: Context) -> Validation | None:
    validation = context.spec.validation
    if validation is None:
        return None
    defaults = context.ledger.candidate(CandidateSettings().candidate_id())
    generation = context.generation
    chosen = [Candidate(defaults.candidate_id, generation, defaults.settings, role=DEFAULTS_BASELINE)]
    front = context.reference.front(context.ledger)
    for role, point in choose_points(front, context.reference.normalised, validation.points):
        if all(c.candidate_id != point.candidate.candidate_id for c in chosen):
            chosen.append(
                Candidate(point.candidate.candidate_id, generation, point.candidate.settings, role=role)
            )
    return Validation(context, validation, chosen)


class Validation(ChosenOnce):
    part = Part.VALIDATION

    def __init__(self, context: Context, validation: ValidationSpec, chosen: list[Candidate]) -> None:
        super().__init__(context, chosen)  # the defaults first
        self._validation = validation

    def results(self) -> list[tuple[Candidate, EvaluationResult | None]]:
        """The validated candidates (the defaults first) and their held-out results so far."""
        return [(c, self.told(c.candidate_id)) for c in self._chosen]

    def plan(self) -> ImagePlan:
        return ImagePlan(
            self.part,
            self._context.generation,
            tuple(self._chosen),
            self._validation.images_per_prompt,
            held_out=True,
            seeds=SeedPolicy(base=self._validation.seed),
            seed_stream=SEED_STREAM,
            per_prompt=True,
            candidates_per_shard=1,
            task_part=Part.WHOLE,
        )

    def tell(self, result: EvaluationResult) -> None:
        candidate_id = result.candidate_id
        if all(c.candidate_id != candidate_id for c in self._chosen):
            raise ValueError(f"candidate {candidate_id} is not being validated")
        if self.told(candidate_id) is not None:
            raise ValueError(f"candidate {candidate_id} already has a validation result")
        self._context.ledger.record_validation(result, self._context.generation)
