"""A generation under the adaptive evidence policy (`algorithm.adaptive`): images in sequential
batches (`Part.BATCH`), each candidate from its own next image index, until no decision a
candidate feeds is left open (`search.allocation`).

Before each batch (the first included) the phase decides who gets `imagesPerPrompt` more:
- a new candidate of the NSGA-II population: its first batch;
- a candidate with part of a whole evaluation (`prompts.imagesPerPrompt`), of this population
  (a candidate stopped in an earlier generation and proposed again continues here, on fresh
  images): more, unless it is infeasible at its best or out of the next population at its best
  (with `stopWhen: front`: unless a front point's estimate is as good as its best everywhere);
- a point of the search's front (whole evaluations only): more, while one of its values is not
  known to `precision`, up to `maxImagesPerPrompt`.
When none gets more, the phase is done. A candidate left with part of a whole evaluation is
final as `Screened.PARTIAL` (never a front point), and NSGA-II is told its best plausible values
(`Ledger.bound`), which keep it out: never its partial estimate as though it were whole. Points
of the population that more images sharpened are revised in NSGA-II's population before its
survival. A failed first batch is the candidate's failure; a failed later one leaves a candidate
with part of its evaluation `Screened.INCOMPLETE` (a failure), a front point as it was.

Each result is recorded as it is told (the ledger holds every candidate's merge of its batches so
far), so the totals count every image. Every image of an adaptive search is generated in calls of
one batch (`EvaluationTask.call_images`), so each batch costs per image what it would cost in a
whole evaluation, with no ratio to estimate.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from sustaindiffusion.api.results import EvaluationResult, Screened
from sustaindiffusion.api.spec import Adaptive, StopRule
from sustaindiffusion.api.statistics import Measurement
from sustaindiffusion.api.task import Part
from sustaindiffusion.api.wire import REASON_LIMIT
from sustaindiffusion.search.allocation import (
    Judged,
    bounds_per_decision,
    error_per_bound,
    judge,
    off_front,
    out_of_population,
    precise,
)
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.merging import merged
from sustaindiffusion.search.phases.base import Context, ImagePlan
from sustaindiffusion.search.population import Population


def start(context: Context) -> AdaptiveEvidence:
    if context.population is None:
        raise ValueError("a generation's phase starts from its NSGA-II population")
    return AdaptiveEvidence(context, context.population)


def measurement_of(context: Context) -> Measurement:
    """What the calibrated bounds need of the spec: the human filter's cap, the meter's noise."""
    spec, settings = context.spec, _settings(context)
    human_filter = spec.scoring.human_filter
    return Measurement(
        max_retries=human_filter.max_retries if human_filter.enabled else 0,
        energy_noise=settings.energy_noise,
        call_images=settings.images_per_prompt,
    )


def _settings(context: Context) -> Adaptive:
    settings = context.spec.algorithm.adaptive
    if settings is None:
        raise ValueError("the adaptive evidence policy needs spec.algorithm.adaptive")
    return settings


class AdaptiveEvidence:
    part = Part.BATCH

    def __init__(self, context: Context, population: Population) -> None:
        self._context = context
        self._population = population
        self._settings = _settings(context)
        self._measurement = measurement_of(context)
        self._whole = context.spec.prompts.images_per_prompt
        looks = self._whole // self._settings.images_per_prompt - 1  # judged at b, 2b, ..., N - b
        self._error = error_per_bound(self._settings.error, bounds_per_decision(context.reference), looks)
        self._topped_up: set[str] = set()  # population members more images sharpened
        self._failed: set[str] = set()  # a batch of theirs failed in this generation: no more
        self.batch = 0
        self._sampled = self._next()
        if not self._sampled:
            self._finish()

    # ------------------------------------------------------------------ the protocol

    def candidates(self) -> list[Candidate]:
        return list(self._sampled)

    def pending(self) -> list[Candidate]:
        return [c for c in self._sampled if self.told(c.candidate_id) is None]

    @property
    def done(self) -> bool:
        return not self._sampled

    def plan(self) -> ImagePlan:
        context, images = self._context, self._settings.images_per_prompt
        ledger = context.ledger
        own = {
            c.candidate_id: ledger.images_per_prompt(c.candidate_id)
            for c in self._sampled
            if ledger.result(c.candidate_id) is not None
        }
        detail = f" (adaptive evidence, batch {self.batch}: {images} images per prompt each)"
        return ImagePlan(
            self.part,
            context.generation,
            tuple(self._sampled),
            images,
            own_first_image=own,
            detail=detail,
            batch=self.batch,
        )

    def told(self, candidate_id: str) -> EvaluationResult | None:
        return self._context.ledger.told_as(self.part, self._context.generation, candidate_id, self.batch)

    def tell(self, result: EvaluationResult) -> None:
        context, candidate_id = self._context, result.candidate_id
        if all(c.candidate_id != candidate_id for c in self._sampled):
            raise ValueError(
                f"candidate {candidate_id} gets no images in batch {self.batch} of generation "
                f"{context.generation}"
            )
        if self.told(candidate_id) is not None:
            raise ValueError(f"candidate {candidate_id} already has its images of batch {self.batch}")
        context.ledger.tell(self.part, context.generation, result, self.batch)
        self._record(result)
        if not self.pending():
            self.batch += 1
            self._sampled = self._next()
            if not self._sampled:
                self._finish()

    # ------------------------------------------------------------------ decisions

    def _record(self, result: EvaluationResult) -> None:
        """The candidate's final result so far: its batches merged."""
        context, candidate_id = self._context, result.candidate_id
        ledger, images = context.ledger, self._settings.images_per_prompt
        before = ledger.result(candidate_id)
        if before is None:
            ledger.record(self._marked(result, images), context.generation, images)
            return
        if before.metrics is None:
            raise ValueError(f"candidate {candidate_id} failed: it gets no more images")
        if not result.ok or result.metrics is None:
            self._failed.add(candidate_id)
            if ledger.images_per_prompt(candidate_id) < self._whole:
                reason = f"a later batch of its images failed: {result.reason}"[:REASON_LIMIT]
                ledger.sharpen(
                    before.model_copy(update={"screened": Screened.INCOMPLETE, "reason": reason}), 0
                )
            return  # a front point keeps the estimate it had
        total = ledger.images_per_prompt(candidate_id) + images
        combined = before.model_copy(update={"metrics": merged(before.metrics, result.metrics)})
        ledger.sharpen(self._marked(combined, total), images)
        if candidate_id in self._members():
            self._topped_up.add(candidate_id)

    def _marked(self, result: EvaluationResult, images_per_prompt: int) -> EvaluationResult:
        if not result.ok:
            return result
        screened = Screened.PARTIAL if images_per_prompt < self._whole else None
        return result.model_copy(update={"screened": screened})

    def _members(self) -> set[Hashable]:
        context = self._context
        return set(
            context.nsga.population_keys(lambda genome: context.encoding.decode(genome).candidate_id())
        )

    def _next(self) -> list[Candidate]:
        """Who gets the next batch, in a stable order: this population's candidates first (as
        asked), then front points (by id)."""
        context = self._context
        ledger, generation = context.ledger, context.generation
        chosen: list[Candidate] = []
        partial: list[str] = []
        for candidate in self._population.candidates:
            candidate_id = candidate.candidate_id
            result = ledger.result(candidate_id)
            if result is None:
                chosen.append(candidate)  # its first batch
            elif self._open(candidate_id, result):
                partial.append(candidate_id)
        if partial:
            by_front = self._settings.stop_when is StopRule.FRONT
            judged = {c: self._judge(c) for c in {*partial, *([] if by_front else self._contestants())}}
            front = self._front_estimates() if by_front else []
            for candidate_id in partial:
                if not self._settled(candidate_id, judged, front):
                    chosen.append(ledger.candidate(candidate_id))
        asked = {c.candidate_id for c in chosen}
        images, cap = self._settings.images_per_prompt, self._settings.max_images_per_prompt
        for point in sorted(context.reference.front(ledger), key=lambda p: p.candidate.candidate_id):
            candidate_id = point.candidate.candidate_id
            result = ledger.result(candidate_id)
            if (
                candidate_id not in asked
                and candidate_id not in self._failed
                and result is not None
                and ledger.images_per_prompt(candidate_id) + images <= cap
                and not precise(result, context.reference, self._measurement, self._settings.precision)
            ):
                chosen.append(ledger.candidate(candidate_id))
        return [Candidate(c.candidate_id, generation, c.settings, c.baseline) for c in chosen]

    def _open(self, candidate_id: str, result: EvaluationResult) -> bool:
        """Whether the candidate rests on part of a whole evaluation and may get more."""
        return (
            result.ok
            and result.screened is Screened.PARTIAL
            and candidate_id not in self._failed
            and self._context.ledger.images_per_prompt(candidate_id) < self._whole
        )

    def _contestants(self) -> list[str]:
        """Who competes for the next population: NSGA-II's population and this one's candidates."""
        ledger = self._context.ledger
        ids = [str(key) for key in self._members()] + [c.candidate_id for c in self._population.candidates]
        return [
            i for i in dict.fromkeys(ids) if (r := ledger.result(i)) is not None and r.metrics is not None
        ]

    def _judge(self, candidate_id: str) -> Judged:
        result = self._context.ledger.result(candidate_id)
        assert result is not None
        return judge(result, self._context.reference, self._measurement, self._error)

    def _settled(
        self, candidate_id: str, judged: dict[str, Judged], front: Sequence[Sequence[float]]
    ) -> bool:
        """Whether the candidate is infeasible at its best, or out of the next population at it
        (off the `front`, at its estimates, when `stopWhen` says so)."""
        candidate = judged[candidate_id]
        if not candidate.feasible_at_best:
            return True
        if self._settings.stop_when is StopRule.FRONT:
            return off_front(candidate, front)
        ledger = self._context.ledger
        ahead: list[tuple[Sequence[float], bool]] = []
        for other_id, other in judged.items():
            if other_id == candidate_id:
                continue
            result = ledger.result(other_id)
            assert result is not None
            if result.screened is Screened.PARTIAL:
                ahead.append((other.pessimistic, other.feasible_at_worst))
            else:
                ahead.append((other.estimate, other.feasible))
        return out_of_population(candidate, ahead, self._context.spec.algorithm.population_size)

    def _front_estimates(self) -> list[tuple[float, ...]]:
        """The search's front points' values as NSGA-II minimises them, at their estimates."""
        ledger = self._context.ledger
        return [
            self._judge(point.candidate.candidate_id).estimate
            for point in self._context.reference.front(ledger)
        ]

    def _finish(self) -> None:
        """What NSGA-II is told: the best plausible values of those left with part of a whole
        evaluation, the sharpened estimates of the population's members."""
        context = self._context
        ledger, reference = context.ledger, context.reference
        for candidate in self._population.candidates:
            candidate_id = candidate.candidate_id
            result = ledger.result(candidate_id)
            if result is not None and result.ok and result.screened is Screened.PARTIAL:
                best = self._judge(candidate_id)
                ledger.bound(candidate_id, (list(best.optimistic), list(best.constraints_at_best)))
            else:
                ledger.bound(candidate_id, None)
        revised: dict[Hashable, tuple[Sequence[float], Sequence[float]]] = {}
        for candidate_id in self._topped_up:
            result = ledger.result(candidate_id)
            if result is not None and result.metrics is not None:
                revised[candidate_id] = ledger.bounded(candidate_id) or reference.told_values(result)
        context.nsga.revise(revised, key=lambda genome: context.encoding.decode(genome).candidate_id())
