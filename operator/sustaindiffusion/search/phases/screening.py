"""A screened generation (`algorithm.screening`), in two parts. The screening pass (`Part.SCREEN`)
asks every new candidate for its first k images per prompt; once all are told, the failed and those
that could not enter the next population even at their best (`search.screening.screened_out`) are
final with their partial estimates. The rest (`Part.REST`) asks the survivors for images k..n-1,
and each one's final result merges both parts (or keeps its first pass, incomplete, if the rest
failed)."""

from __future__ import annotations

from sustaindiffusion.api.results import EvaluationResult, Screened
from sustaindiffusion.api.task import Part
from sustaindiffusion.api.wire import REASON_LIMIT
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.merging import merged
from sustaindiffusion.search.phases.base import Context, ImagePlan
from sustaindiffusion.search.population import Population
from sustaindiffusion.search.screening import Limits, SurePoint, bounds, screened_out


def start(context: Context) -> Screening:
    if context.population is None:
        raise ValueError("a generation's phase starts from its NSGA-II population")
    return Screening(context, context.population)


class Screening:
    def __init__(self, context: Context, population: Population) -> None:
        self._context = context
        self._population = population
        self._survivors: list[Candidate] = []
        self.part = Part.SCREEN

    @property
    def _screening(self) -> tuple[int, float]:
        screening = self._context.spec.algorithm.screening
        if screening is None:
            raise ValueError("screening needs spec.algorithm.screening")
        return screening.images_per_prompt, screening.confidence

    def candidates(self) -> list[Candidate]:
        if self.part is Part.REST:
            return list(self._survivors)
        return self._context.new_candidates(self._population.candidates)

    def pending(self) -> list[Candidate]:
        ledger, generation = self._context.ledger, self._context.generation
        if self.part is Part.REST:
            return [c for c in self._survivors if ledger.result(c.candidate_id) is None]
        return [
            c
            for c in self._population.candidates
            if ledger.result(c.candidate_id) is None
            and ledger.told_as(Part.SCREEN, generation, c.candidate_id) is None
        ]

    @property
    def done(self) -> bool:
        ledger = self._context.ledger
        return all(ledger.result(c.candidate_id) is not None for c in self._population.candidates)

    def plan(self) -> ImagePlan:
        context, (first, _) = self._context, self._screening
        images = context.spec.prompts.images_per_prompt
        candidates = tuple(self.candidates())
        if self.part is Part.REST:
            detail = f" (the screening's survivors: images {first}..{images - 1} of each prompt)"
            return ImagePlan(self.part, context.generation, candidates, images - first, first, detail=detail)
        detail = f" (screening: images 0..{first - 1} of each prompt)"
        return ImagePlan(self.part, context.generation, candidates, first, detail=detail)

    def told(self, candidate_id: str) -> EvaluationResult | None:
        ledger, generation = self._context.ledger, self._context.generation
        if self.part is Part.REST:
            survived = any(c.candidate_id == candidate_id for c in self._survivors)
            return ledger.told_as(Part.REST, generation, candidate_id) if survived else None
        new = any(c.candidate_id == candidate_id for c in self.candidates())
        first_pass = ledger.told_as(Part.SCREEN, generation, candidate_id) if new else None
        return first_pass if first_pass is not None else ledger.result(candidate_id)

    def tell(self, result: EvaluationResult) -> None:
        context, candidate_id = self._context, result.candidate_id
        ledger, generation = context.ledger, context.generation
        if all(c.candidate_id != candidate_id for c in self._population.candidates):
            raise context.not_pending(candidate_id)
        if (
            ledger.result(candidate_id) is not None
            or ledger.told_as(Part.REST, generation, candidate_id) is not None
        ):
            raise ValueError(f"candidate {candidate_id} already has a result")
        if self.part is Part.SCREEN:
            if ledger.told_as(Part.SCREEN, generation, candidate_id) is not None:
                raise ValueError(f"candidate {candidate_id} already has a screening result")
            ledger.tell(Part.SCREEN, generation, result)
            if all(
                ledger.told_as(Part.SCREEN, generation, c.candidate_id) is not None for c in self.candidates()
            ):
                self._decide()
            return
        if all(c.candidate_id != candidate_id for c in self._survivors):
            raise ValueError(f"candidate {candidate_id} did not survive the screening")
        ledger.tell(Part.REST, generation, result)
        first = ledger.told_as(Part.SCREEN, generation, candidate_id)
        assert first is not None
        self._record(_completed(first, result))

    def _record(self, result: EvaluationResult) -> None:
        """A final result: a partial one rests on the screening pass's images per prompt."""
        partial = result.screened in (Screened.OUT, Screened.INCOMPLETE)
        images = self._screening[0] if partial else self._context.spec.prompts.images_per_prompt
        self._context.ledger.record(result, self._context.generation, images)

    def _decide(self) -> None:
        """Every new candidate has its first pass: fix the failed and the screened out as final,
        and move on to the rest for the others (none left: the phase is done)."""
        context = self._context
        reference, generation = context.reference, context.generation
        passes = {
            c.candidate_id: context.ledger.told_as(Part.SCREEN, generation, c.candidate_id)
            for c in self.candidates()
        }
        estimated = {}
        for candidate_id, result in passes.items():
            assert result is not None
            if result.metrics is None or not result.ok:
                self._record(result)
                continue
            valid_images = context.spec.constraints.valid_images
            limits = Limits(
                quality_threshold=reference.quality_threshold,
                min_valid_share=valid_images.min_share if valid_images.enabled else None,
                other_device=reference.constraint_values(result)[2] > 0,
            )
            assert reference.scales is not None
            confidence = self._screening[1]
            estimated[candidate_id] = bounds(
                result.metrics, reference.scales, limits, candidate_id, confidence
            )
        out = screened_out(estimated, self._sure_points(), context.spec.algorithm.population_size)
        for candidate_id in estimated:
            if candidate_id in out:
                first_pass = passes[candidate_id]
                assert first_pass is not None
                self._record(first_pass.model_copy(update={"screened": Screened.OUT}))
        self._survivors = [c for c in self.candidates() if c.candidate_id in estimated.keys() - out]
        if self._survivors:
            self.part = Part.REST

    def _sure_points(self) -> list[SurePoint]:
        """What a screened candidate competes with for the next population, known at full fidelity:
        the population so far, and this generation's candidates reused from earlier ones (equal
        points once: a reused candidate may be a member of the population too)."""
        context = self._context
        ledger, reference = context.ledger, context.reference
        points = {(tuple(values), feasible) for values, feasible in context.nsga.population()}
        for candidate_id in self._population.genome_ids:
            result = ledger.result(candidate_id)
            reused = result is not None and ledger.evaluated_in(candidate_id) != context.generation
            if result is not None and result.metrics is not None and reused:
                points.add((tuple(reference.minimised(result.metrics)), reference.feasible(result)))
        return [SurePoint(list(values), feasible) for values, feasible in sorted(points)]


def _completed(first: EvaluationResult, rest: EvaluationResult) -> EvaluationResult:
    """A survivor's final result: both parts merged, or its first pass if the rest failed."""
    assert first.metrics is not None
    if rest.metrics is None or not rest.ok:
        reason = f"the rest of its images failed: {rest.reason}"[:REASON_LIMIT]
        return first.model_copy(update={"screened": Screened.INCOMPLETE, "reason": reason})
    return first.model_copy(
        update={"metrics": merged(first.metrics, rest.metrics), "screened": Screened.COMPLETED}
    )
