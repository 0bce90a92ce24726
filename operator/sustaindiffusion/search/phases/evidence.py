"""More evidence for the front (`algorithm.evidence`): from generation 2 on, before the generation's
own candidates, up to `points` front points (as the generations before left it) get
`imagesPerPrompt` more images each, from their own next image index, while they stay within
`maxImagesPerPrompt`: the fewest images first, then by id, so the choice is the same on every
replay. Each sharpened estimate replaces the point's result in place (a failed extra pass changes
nothing), and NSGA-II's population is revised with them before this generation's survival."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.merging import merged
from sustaindiffusion.search.phases.base import ChosenOnce, Context, ImagePlan


def start(context: Context) -> Evidence | None:
    evidence = context.spec.algorithm.evidence
    if evidence is None or context.generation < 2:
        return None
    ledger = context.ledger
    eligible = [
        point.candidate
        for point in context.reference.front(ledger, before=context.generation)
        if ledger.images_per_prompt(point.candidate.candidate_id) + evidence.images_per_prompt
        <= evidence.max_images_per_prompt
    ]
    eligible.sort(key=lambda c: (ledger.images_per_prompt(c.candidate_id), c.candidate_id))
    chosen = [Candidate(c.candidate_id, context.generation, c.settings) for c in eligible[: evidence.points]]
    return Evidence(context, chosen, evidence.images_per_prompt) if chosen else None


class Evidence(ChosenOnce):
    part = Part.EVIDENCE

    def __init__(self, context: Context, chosen: Sequence[Candidate], images_per_prompt: int) -> None:
        super().__init__(context, chosen)
        self._images_per_prompt = images_per_prompt

    def plan(self) -> ImagePlan:
        context, images = self._context, self._images_per_prompt
        own = {c.candidate_id: context.ledger.images_per_prompt(c.candidate_id) for c in self._chosen}
        detail = f" (more evidence for front points: {images} more images per prompt each)"
        return ImagePlan(
            self.part, context.generation, tuple(self._chosen), images, own_first_image=own, detail=detail
        )

    def tell(self, result: EvaluationResult) -> None:
        context, candidate_id = self._context, result.candidate_id
        ledger = context.ledger
        if all(c.candidate_id != candidate_id for c in self._chosen):
            raise ValueError(
                f"candidate {candidate_id} gets no more evidence in generation {context.generation}"
            )
        if self.told(candidate_id) is not None:
            raise ValueError(f"candidate {candidate_id} already has its evidence of this generation")
        ledger.tell(self.part, context.generation, result)
        before = ledger.result(candidate_id)
        assert before is not None
        if result.ok and result.metrics is not None and before.metrics is not None:
            # A failed extra pass changes nothing: the point keeps the estimate it had.
            sharpened = before.model_copy(update={"metrics": merged(before.metrics, result.metrics)})
            ledger.sharpen(sharpened, self._images_per_prompt)
        if self.done:
            self._revise_population()

    def _revise_population(self) -> None:
        """NSGA-II's population sees the sharpened estimates before this generation's survival."""
        context = self._context
        values: dict[Hashable, tuple[Sequence[float], Sequence[float]]] = {}
        for candidate in self._chosen:
            result = context.ledger.result(candidate.candidate_id)
            if result is None or result.metrics is None:
                continue
            values[candidate.candidate_id] = context.reference.told_values(result)
        context.nsga.revise(values, key=lambda genome: context.encoding.decode(genome).candidate_id())
