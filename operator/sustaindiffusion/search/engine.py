"""The search engine: one ask/tell API shared by the operator and the local runner, and the owner
of the search's outcome.

    engine = SearchEngine(spec)
    while not engine.outcome().finished:
        for candidate in engine.ask():        # the current generation's candidates still to evaluate
            engine.tell(evaluate(candidate))  # any order; the generation completes with its last result
    engine.outcome()                          # Succeeded or Failed, with a reason and a message

Generation 0 evaluates the baselines: the model's default settings and the spec's own
configurations. The quality constraint and the energy and time scales refer to the defaults.
Generations 1..N are NSGA-II populations. Candidates are settings in canonical form (what cannot
change the images removed), so equivalent genomes are one candidate, and NSGA-II treats them as
duplicates. A candidate whose settings were evaluated before (same id) is not asked again: its
recorded result is reused.

With `algorithm.screening`, a search generation has two parts (`Part`): the screening pass asks
every new candidate for its first images; once all are told, `screening.screened_out` decides who
could not enter the next population, and those are final with their partial estimates; the rest
part asks the survivors for their remaining images, and each one's final result merges both.

The outcome is the engine's alone: running; failed because the defaults could not be evaluated
(BaselineFailed) or more candidates failed than `execution.maxFailedCandidates` allows
(TooManyFailures); or succeeded when a stopping rule fired (generations, evaluation or energy
budget, hypervolume stagnation). Callers ask `outcome()`; none re-derives it.

Resume: `SearchEngine.from_archive(spec, records)` (or `replay(spec, results)`) feeds recorded
results, in the order they were told, to a fresh engine. pymoo's generator is seeded once, so the
replayed engine reaches the identical state and asks the identical next candidates. Nothing is
pickled.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.objectives import ObjectiveName
from sustaindiffusion.api.results import EvaluationResult, Metrics, Screened
from sustaindiffusion.api.spec import Configuration, SustainSearchSpec
from sustaindiffusion.api.task import Part
from sustaindiffusion.api.wire import REASON_LIMIT
from sustaindiffusion.search.encoding import Genome, SearchSpaceEncoding
from sustaindiffusion.search.heldout import choose_points
from sustaindiffusion.search.merging import merged
from sustaindiffusion.search.nsga2 import AskTellNSGA2
from sustaindiffusion.search.objectives import (
    ObjectiveScale,
    hypervolume,
    non_dominated,
    objective_scales,
)
from sustaindiffusion.search.records import ArchiveRecord, uses_canonical_ids
from sustaindiffusion.search.screening import Limits, SurePoint, bounds, screened_out

DEFAULTS_BASELINE = "defaults"
PART_STAGES = (Part.SCREEN.value, Part.REST.value, Part.EVIDENCE.value)  # archive stages of parts
FAILURE_VIOLATION = 1e6  # constraint violation told for a failed evaluation: worse than any real one
CONSTRAINTS = ("quality", "validImages", "sameDevice")  # the order of constraint_values
MEASURED_OBJECTIVES = (ObjectiveName.ENERGY, ObjectiveName.TIME)  # compared on one GPU model only


class ReplayMismatchError(RuntimeError):
    """Recorded results do not belong to the candidates this spec and seed ask for."""


class OutcomeState(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class OutcomeReason(StrEnum):
    RUNNING = "Running"
    VALIDATING = "Validating"
    GENERATIONS_COMPLETED = "GenerationsCompleted"
    EVALUATION_BUDGET = "EvaluationBudget"
    ENERGY_BUDGET = "EnergyBudget"
    HYPERVOLUME_STAGNATION = "HypervolumeStagnation"
    BASELINE_FAILED = "BaselineFailed"
    TOO_MANY_FAILURES = "TooManyFailures"


@dataclass(frozen=True)
class Outcome:
    """Where the search stands: running, or finished with a reason (CamelCase) and a message."""

    state: OutcomeState
    reason: OutcomeReason
    message: str

    @property
    def finished(self) -> bool:
        return self.state is not OutcomeState.RUNNING

    @property
    def failed(self) -> bool:
        return self.state is OutcomeState.FAILED


class Stage(StrEnum):
    SEARCH = "search"
    VALIDATION = "validation"  # the held-out evaluation of the defaults and front points at the end


@dataclass(frozen=True)
class Candidate:
    candidate_id: str
    generation: int
    settings: CandidateSettings
    baseline: str | None = None  # the baseline's name in generation 0, None for search candidates
    role: str | None = None  # in validation: "defaults", "knee", "best GenderBias", "spread"


@dataclass(frozen=True)
class FrontPoint:
    candidate: Candidate
    metrics: Metrics
    objectives: dict[str, float]
    device: str | None = None  # the GPU model it was measured on


@dataclass(frozen=True)
class ScreeningTally:
    screened: int  # candidates with a final result after a screening pass
    screened_out: int
    incomplete: int  # survivors whose rest of images failed
    images_saved: int  # images the screened-out candidates did not generate


@dataclass
class _Generation:
    number: int
    candidates: list[Candidate]  # distinct ids, in asked order
    genomes: list[Genome] = field(default_factory=list)  # NSGA-II genomes in asked order (gen >= 1)
    genome_ids: list[str] = field(default_factory=list)
    part: Part = Part.WHOLE
    screened: dict[str, EvaluationResult] = field(default_factory=dict)  # first passes, by id
    survivors: list[Candidate] = field(default_factory=list)  # screened candidates that get the rest
    rest: dict[str, EvaluationResult] = field(default_factory=dict)  # the survivors' rest, as told
    evidence: list[Candidate] = field(default_factory=list)  # front points given more images first
    evidence_told: dict[str, EvaluationResult] = field(default_factory=dict)
    after_evidence: Part = Part.WHOLE  # the part that follows the evidence


class SearchEngine:
    def __init__(self, spec: SustainSearchSpec, canonical_ids: bool = True) -> None:
        """`canonical_ids`: candidates are the canonical form of their settings, and genomes with
        equal canonical settings are duplicates; off only for archives begun before (see
        `records.uses_canonical_ids`), which replay as they were recorded."""
        self.spec = spec
        self.canonical_ids = canonical_ids
        self.encoding = SearchSpaceEncoding(spec.search_space, canonical=canonical_ids)
        algorithm = spec.algorithm
        self._nsga = AskTellNSGA2(
            self.encoding.variables(),
            n_objectives=len(spec.objectives),
            n_constraints=len(CONSTRAINTS),
            pop_size=algorithm.population_size,
            seed=algorithm.seed,
            crossover_probability=algorithm.crossover_probability,
            mutation_probability=algorithm.mutation_probability,
            key=(lambda genome: self.encoding.decode(genome).candidate_id()) if canonical_ids else None,
        )
        self.generation = 0
        self._current: _Generation | None = None
        self._results: dict[str, EvaluationResult] = {}
        self._told_in: dict[str, int] = {}  # candidate id -> generation whose batch evaluated it
        self._candidates: dict[str, Candidate] = {}  # first appearance of each id
        self._search_ids: list[str] = []  # ids that took part in an NSGA-II generation, first-seen order
        self.told: list[EvaluationResult] = []  # each candidate's final result, in the order told
        self._told_at: dict[str, int] = {}  # candidate id -> its index in `told`
        self._per_prompt: dict[str, int] = {}  # candidate id -> images per prompt its result rests on
        self._scales: list[ObjectiveScale] | None = None
        self.quality_threshold: float | None = None
        self.defaults_device: str | None = None  # the GPU model energy and time are compared on
        self.hypervolume_history: list[float] = []
        self._stopped: Outcome | None = None  # set when the baseline fails or a stopping rule fires
        self._search_end: Outcome | None = None  # how the search ended, while its validation runs
        self._validation: _Generation | None = None  # the held-out evaluation, once it started
        self._validation_results: dict[str, EvaluationResult] = {}
        self.validation_told: list[EvaluationResult] = []

    # ------------------------------------------------------------------ outcome

    def outcome(self) -> Outcome:
        """Running, or how the search ended. The failure limit is the spec's current one, so raising
        `execution.maxFailedCandidates` lets a search that failed for it go on."""
        if self._stopped is not None and self._stopped.reason is OutcomeReason.BASELINE_FAILED:
            return self._stopped
        limit = self.spec.execution.max_failed_candidates
        if self.failures > limit:
            return Outcome(
                OutcomeState.FAILED,
                OutcomeReason.TOO_MANY_FAILURES,
                f"{self.failures} candidates failed, more than spec.execution.maxFailedCandidates "
                f"({limit}); see the archive for their reasons",
            )
        if self._stopped is not None:
            return self._stopped
        if self._validation is not None:
            points = len(self._validation.candidates)
            return Outcome(
                OutcomeState.RUNNING,
                OutcomeReason.VALIDATING,
                f"validating the defaults and {points - 1} front points on held-out prompts",
            )
        return Outcome(OutcomeState.RUNNING, OutcomeReason.RUNNING, f"generation {self.generation}")

    @property
    def stage(self) -> Stage:
        return Stage.VALIDATION if self._validation is not None and self._stopped is None else Stage.SEARCH

    # ------------------------------------------------------------------ ask / tell

    def ask(self) -> list[Candidate]:
        """The current generation's candidates that still need a result, while the search runs
        (asking again is harmless)."""
        return self.pending() if not self.outcome().finished else []

    def pending(self) -> list[Candidate]:
        """The current generation's candidates without a result. A search that failed for too many
        failures mid-generation still lists the rest, so results already produced can be told."""
        if self._validation is not None:
            if self._stopped is not None:
                return []
            return [c for c in self._validation.candidates if c.candidate_id not in self._validation_results]
        if self._current is None:
            if self._stopped is not None or self.failures > self.spec.execution.max_failed_candidates:
                return []
            self._current = self._start_generation()
            if self._complete_if_done():
                return self.pending()
        current = self._current
        if current.part is Part.EVIDENCE:
            return [c for c in current.evidence if c.candidate_id not in current.evidence_told]
        if current.part is Part.SCREEN:
            return [
                c
                for c in current.candidates
                if c.candidate_id not in self._results and c.candidate_id not in current.screened
            ]
        if current.part is Part.REST:
            return [c for c in current.survivors if c.candidate_id not in self._results]
        return [c for c in current.candidates if c.candidate_id not in self._results]

    @property
    def part(self) -> Part:
        """Which images of its candidates the current generation evaluates now."""
        self.pending()
        if self._validation is not None or self._current is None:
            return Part.WHOLE
        return self._current.part

    def image_range(self) -> tuple[int, int]:
        """The current part's first image index per prompt and its number of images per prompt
        (in the evidence part, each candidate's `first_image` overrides the first)."""
        images = self.spec.prompts.images_per_prompt
        screening = self.spec.algorithm.screening
        part = self.part
        if part is Part.EVIDENCE:
            return 0, self._evidence_images()  # each candidate from its own next image (first_image)
        if screening is None or part is Part.WHOLE:
            return 0, images
        if part is Part.SCREEN:
            return 0, screening.images_per_prompt
        return screening.images_per_prompt, images - screening.images_per_prompt

    def tell(self, result: EvaluationResult, part: Part | None = None) -> None:
        """Record one result of the current generation (of its current `part`, which the caller
        may name to have it checked); the last one completes the part, or the generation."""
        if self._validation is not None and self._stopped is None:
            self._tell_validation(result)
            return
        current = self._current
        if part is not None and current is not None and part is not current.part:
            raise ValueError(
                f"a result of the {part.value} part told to the {current.part.value} part of "
                f"generation {self.generation}"
            )
        if current is not None and current.part is Part.EVIDENCE:
            self._tell_evidence(current, result)
            return
        if current is None or all(c.candidate_id != result.candidate_id for c in current.candidates):
            raise ValueError(
                f"candidate {result.candidate_id} is not pending in generation {self.generation}"
            )
        if result.candidate_id in self._results or result.candidate_id in current.rest:
            raise ValueError(f"candidate {result.candidate_id} already has a result")
        if current.part is Part.SCREEN:
            if result.candidate_id in current.screened:
                raise ValueError(f"candidate {result.candidate_id} already has a screening result")
            current.screened[result.candidate_id] = result
            if all(c.candidate_id in current.screened for c in self.current_candidates()):
                self._decide_screening(current)
        elif current.part is Part.REST:
            if all(c.candidate_id != result.candidate_id for c in current.survivors):
                raise ValueError(f"candidate {result.candidate_id} did not survive the screening")
            current.rest[result.candidate_id] = result
            self._record(self._completed(current.screened[result.candidate_id], result))
        else:
            self._record(result)
        self._complete_if_done()

    def _record(self, result: EvaluationResult) -> None:
        """A candidate's final result of this generation."""
        screening = self.spec.algorithm.screening
        partial = result.screened in (Screened.OUT, Screened.INCOMPLETE) and screening is not None
        self._results[result.candidate_id] = result
        self._told_in[result.candidate_id] = self.generation
        self._told_at[result.candidate_id] = len(self.told)
        self._per_prompt[result.candidate_id] = (
            screening.images_per_prompt if partial and screening else self.spec.prompts.images_per_prompt
        )
        self.told.append(result)

    # ------------------------------------------------------------------ more evidence for the front

    def _evidence_candidates(self) -> list[Candidate]:
        """The front points that get more images this generation: those that stay within the cap,
        the fewest images first (then by id, so the choice is the same on every replay)."""
        evidence = self.spec.algorithm.evidence
        if evidence is None or self.generation < 2:
            return []
        eligible = [
            point.candidate
            for point in self.front()
            if self._per_prompt[point.candidate.candidate_id] + evidence.images_per_prompt
            <= evidence.max_images_per_prompt
        ]
        eligible.sort(key=lambda c: (self._per_prompt[c.candidate_id], c.candidate_id))
        return [Candidate(c.candidate_id, self.generation, c.settings) for c in eligible[: evidence.points]]

    def first_image(self, candidate_id: str) -> int | None:
        """Where the candidate's images start in the current part, when it is its own (evidence)."""
        if self.part is Part.EVIDENCE:
            return self._per_prompt[candidate_id]
        return None

    def _tell_evidence(self, current: _Generation, result: EvaluationResult) -> None:
        candidate_id = result.candidate_id
        if all(c.candidate_id != candidate_id for c in current.evidence):
            raise ValueError(
                f"candidate {candidate_id} gets no more evidence in generation {self.generation}"
            )
        if candidate_id in current.evidence_told:
            raise ValueError(f"candidate {candidate_id} already has its evidence of this generation")
        current.evidence_told[candidate_id] = result
        before = self._results[candidate_id]
        if result.ok and result.metrics is not None and before.metrics is not None:
            # A failed extra pass changes nothing: the point keeps the estimate it had.
            sharpened = before.model_copy(update={"metrics": merged(before.metrics, result.metrics)})
            self._results[candidate_id] = sharpened
            self.told[self._told_at[candidate_id]] = sharpened
            self._per_prompt[candidate_id] += self._evidence_images()
        if all(c.candidate_id in current.evidence_told for c in current.evidence):
            self._revise_population(current)
            current.part = current.after_evidence
            self._complete_if_done()

    def _evidence_images(self) -> int:
        evidence = self.spec.algorithm.evidence
        assert evidence is not None
        return evidence.images_per_prompt

    def _revise_population(self, current: _Generation) -> None:
        """NSGA-II's population sees the sharpened estimates before this generation's survival."""
        scales = self._scales_or_raise()
        values: dict[Hashable, tuple[Sequence[float], Sequence[float]]] = {}
        for candidate in current.evidence:
            result = self._results[candidate.candidate_id]
            if result.metrics is None:
                continue
            objectives = self._objective_values(result.metrics)
            minimised = [s.minimised(v) for s, v in zip(scales, objectives, strict=True)]
            values[candidate.candidate_id] = (minimised, self.constraint_values(result))
        self._nsga.revise(values, key=lambda genome: self.encoding.decode(genome).candidate_id())

    def _completed(self, first: EvaluationResult, rest: EvaluationResult) -> EvaluationResult:
        """A survivor's final result: both parts merged, or its first pass if the rest failed."""
        assert first.metrics is not None
        if rest.metrics is None or not rest.ok:
            reason = f"the rest of its images failed: {rest.reason}"[:REASON_LIMIT]
            return first.model_copy(update={"screened": Screened.INCOMPLETE, "reason": reason})
        metrics = merged(first.metrics, rest.metrics)
        return first.model_copy(update={"metrics": metrics, "screened": Screened.COMPLETED})

    def _decide_screening(self, current: _Generation) -> None:
        """Every new candidate has its first pass: fix the failed and the screened out as final,
        and move on to the rest for the others (none left: the generation completes)."""
        screening = self.spec.algorithm.screening
        assert screening is not None
        scales = self._scales_or_raise()
        passes = {c.candidate_id: current.screened[c.candidate_id] for c in self.current_candidates()}
        estimated = {}
        for candidate_id, result in passes.items():
            if result.metrics is None or not result.ok:
                self._record(result)
                continue
            constraints = self.constraint_values(result)
            limits = Limits(
                quality_threshold=self.quality_threshold,
                min_valid_share=self.spec.constraints.valid_images.min_share
                if self.spec.constraints.valid_images.enabled
                else None,
                other_device=constraints[2] > 0,
            )
            estimated[candidate_id] = bounds(
                result.metrics, scales, limits, candidate_id, screening.confidence
            )
        out = screened_out(estimated, self._sure_points(current), self.spec.algorithm.population_size)
        for candidate_id in estimated:
            if candidate_id in out:
                self._record(passes[candidate_id].model_copy(update={"screened": Screened.OUT}))
        current.survivors = [c for c in self.current_candidates() if c.candidate_id in estimated.keys() - out]
        if current.survivors:
            current.part = Part.REST

    def _sure_points(self, current: _Generation) -> list[SurePoint]:
        """What a screened candidate competes with for the next population, known at full fidelity:
        the population so far, and this generation's candidates reused from earlier ones (equal
        points once: a reused candidate may be a member of the population too)."""
        scales = self._scales_or_raise()
        points = {(tuple(values), feasible) for values, feasible in self._nsga.population()}
        for candidate_id in current.genome_ids:
            result = self._results.get(candidate_id)
            reused = result is not None and self._told_in[candidate_id] != current.number
            if result is not None and result.metrics is not None and reused:
                values = self._objective_values(result.metrics)
                minimised = tuple(s.minimised(v) for s, v in zip(scales, values, strict=True))
                points.add((minimised, self.feasible(result)))
        return [SurePoint(list(values), feasible) for values, feasible in sorted(points)]

    @classmethod
    def replay(
        cls,
        spec: SustainSearchSpec,
        results: Iterable[EvaluationResult | tuple[str | None, EvaluationResult]],
        canonical_ids: bool = True,
    ) -> SearchEngine:
        """A fresh engine fed recorded results in order: the state of the engine that recorded them.
        A result may come with its record's stage, which must be the part the engine is in. An exact
        repeat of a result already told is dropped (an append that was retried)."""
        engine = cls(spec, canonical_ids)
        for item in results:
            stage, result = item if isinstance(item, tuple) else (None, item)
            if engine._told_now().get(result.candidate_id) == result:
                continue
            part = Part(stage) if stage in PART_STAGES else None
            pending = {c.candidate_id for c in engine.pending()}
            if part is not None and engine._stopped is None and part is not engine.part:
                raise ReplayMismatchError(
                    f"recorded {part.value} result for {result.candidate_id} where generation "
                    f"{engine.generation} of this spec is in its {engine.part.value} part"
                )
            if result.candidate_id not in pending:
                if engine._stopped is not None:
                    break  # a spec whose budget was lowered meanwhile: the rest came after its end
                raise ReplayMismatchError(
                    f"recorded result for {result.candidate_id} does not match generation "
                    f"{engine.generation} of this spec and seed (pending: {sorted(pending)}); "
                    "the archive belongs to another search"
                )
            engine.tell(result, part)
        return engine

    def _told_now(self) -> dict[str, EvaluationResult]:
        """The results told so far to what the engine evaluates now, as they were told."""
        if self.stage is Stage.VALIDATION:
            return self._validation_results
        current = self._current
        if current is not None and current.part is Part.SCREEN:
            return current.screened | {i: r for i, r in self._results.items() if i not in current.screened}
        if current is not None and current.part is Part.REST:
            return current.rest
        if current is not None and current.part is Part.EVIDENCE:
            return current.evidence_told
        return self._results

    @classmethod
    def from_archive(cls, spec: SustainSearchSpec, records: Sequence[ArchiveRecord]) -> SearchEngine:
        """`replay` of an archive's records, with the candidate identity the archive began with."""
        told = [(record.stage, record.result) for record in records]
        return cls.replay(spec, told, uses_canonical_ids(records))

    # ------------------------------------------------------------------ views

    def current_candidates(self) -> list[Candidate]:
        """The candidates the current generation evaluates, done or not, in asked order: those not
        evaluated in an earlier generation (their recorded results are reused). Stable across
        restarts, so a generation's task is the same whenever it is built."""
        self.pending()
        if self._validation is not None:
            return list(self._validation.candidates)
        if self._current is None:
            return []
        if self._current.part is Part.REST:
            return list(self._current.survivors)
        if self._current.part is Part.EVIDENCE:
            return list(self._current.evidence)
        number = self._current.number
        told_in = self._told_in
        return [c for c in self._current.candidates if told_in.get(c.candidate_id, number) == number]

    def result(self, candidate_id: str) -> EvaluationResult | None:
        return self._results.get(candidate_id)

    def defaults_metrics(self) -> Metrics | None:
        """The model defaults' metrics from generation 0 (None before, or when they failed)."""
        result = self._results.get(CandidateSettings().candidate_id())
        return result.metrics if result is not None else None

    def candidate(self, candidate_id: str) -> Candidate:
        return self._candidates[candidate_id]

    def energy_joules(self) -> tuple[float, float]:
        """GPU and CPU joules of every evaluation so far, summed exactly (`math.fsum`), so the total
        does not depend on the order in which shards reported."""
        first_passes = (
            [r for i, r in self._current.screened.items() if i not in self._results] if self._current else []
        )
        told = (*self.told, *self.validation_told, *first_passes)  # a survivor's final holds its first pass
        measured = [r.metrics for r in told if r.metrics is not None]
        return math.fsum(m.gpu_joules for m in measured), math.fsum(m.cpu_joules for m in measured)

    def devices(self) -> list[str]:
        """The GPU models (or cpu) that results were measured on, sorted."""
        told = (*self.told, *self.validation_told)
        return sorted({r.device.name for r in told if r.device is not None and r.metrics is not None})

    @property
    def total_energy_joules(self) -> float:
        return math.fsum(self.energy_joules())

    @property
    def evaluations(self) -> int:
        return len(self._results)

    def screening_tally(self) -> ScreeningTally | None:
        """What screening did so far (None when the spec does not screen)."""
        screening = self.spec.algorithm.screening
        if screening is None:
            return None
        final = [r for r in self._results.values() if r.screened is not None]
        out = [r for r in final if r.screened is Screened.OUT]
        images = self.spec.prompts.images_per_prompt
        saved = sum(
            r.metrics.images * (images - screening.images_per_prompt) // screening.images_per_prompt
            for r in out
            if r.metrics is not None
        )
        return ScreeningTally(
            screened=len(final),
            screened_out=len(out),
            incomplete=sum(1 for r in final if r.screened is Screened.INCOMPLETE),
            images_saved=saved,
        )

    @property
    def failures(self) -> int:
        """Candidates without a full evaluation for a failure: failed, or screened and incomplete."""
        return sum(1 for r in self._results.values() if not r.ok or r.screened is Screened.INCOMPLETE)

    def baselines(self) -> list[tuple[Candidate, EvaluationResult | None]]:
        return [(c, self._results.get(c.candidate_id)) for c in self._candidates.values() if c.baseline]

    @property
    def has_reference(self) -> bool:
        """Whether the defaults were evaluated, so objectives can be normalised and fronts compared."""
        return self._scales is not None

    def normalised(self, objectives: Mapping[str, float]) -> list[float]:
        """Objective values (by name, in the spec's order) scaled to 0 (best) .. 1 (worst)."""
        return [s.normalise(objectives[s.name.value]) for s in self._scales_or_raise()]

    def front(self) -> list[FrontPoint]:
        """Non-dominated feasible results of the search so far (baselines reported beside it; the
        screened out left aside); empty until the defaults have been evaluated."""
        points = self._feasible_search_points()
        if not points or self._scales is None:
            return []
        matrix = np.array(
            [[s.minimised(v) for s, v in zip(self._scales, values, strict=True)] for _, values in points]
        )
        front = [points[i] for i in sorted(non_dominated(matrix))]
        return [
            FrontPoint(
                candidate=self._candidates[result.candidate_id],
                metrics=result.metrics,
                objectives={o.name.value: v for o, v in zip(self.spec.objectives, values, strict=True)},
                device=result.device.name if result.device is not None else None,
            )
            for result, values in front
            if result.metrics is not None
        ]

    def current_hypervolume(self) -> float:
        points = self._feasible_search_points()
        if not points or self._scales is None:
            return 0.0
        scales = self._scales
        normalised = np.array(
            [[s.normalise(v) for s, v in zip(scales, values, strict=True)] for _, values in points]
        )
        return hypervolume(normalised)

    # ------------------------------------------------------------------ internals

    def _scales_or_raise(self) -> list[ObjectiveScale]:
        if self._scales is None:
            raise RuntimeError("objective scales are set once the baseline generation completes")
        return self._scales

    def _objective_values(self, metrics: Metrics) -> list[float]:
        return [metrics.objective(o.name) for o in self.spec.objectives]

    def constraint_values(self, result: EvaluationResult) -> list[float]:
        """The result's constraints, `g <= 0` when met, in `CONSTRAINTS` order: quality at least the
        threshold; enough valid images; measured on the defaults' GPU model (when energy or time is
        an objective). What was not recorded (results older than the counts) counts as met."""
        metrics = result.metrics
        if metrics is None:
            return [FAILURE_VIOLATION, 0.0, 0.0]
        constraints = self.spec.constraints
        quality = self.quality_threshold - metrics.quality if self.quality_threshold is not None else -1.0
        share = metrics.valid_share
        valid = (
            constraints.valid_images.min_share - share
            if constraints.valid_images.enabled and share is not None
            else -1.0
        )
        device = result.device.name if result.device is not None else None
        compared = constraints.same_device and any(
            o.name in MEASURED_OBJECTIVES for o in self.spec.objectives
        )
        other_device = (
            compared
            and device is not None
            and self.defaults_device is not None
            and device != self.defaults_device
        )
        return [quality, valid, 1.0 if other_device else -1.0]

    def feasible(self, result: EvaluationResult) -> bool:
        return result.metrics is not None and all(g <= 0 for g in self.constraint_values(result))

    def _feasible_search_points(self) -> list[tuple[EvaluationResult, list[float]]]:
        points = []
        for candidate_id in self._search_ids:
            result = self._results.get(candidate_id)
            if result is None or result.metrics is None or result.screened is Screened.OUT:
                continue  # a screened-out estimate rests on a first pass only: never a front point
            if self.feasible(result):
                points.append((result, self._objective_values(result.metrics)))
        return points

    def _baseline_settings(self) -> list[tuple[str, CandidateSettings]]:
        configurations: list[tuple[str, CandidateSettings]] = [(DEFAULTS_BASELINE, CandidateSettings())]
        for configuration in self.spec.baselines or []:
            settings = _settings_of(configuration)
            canonical = settings.canonical() if self.canonical_ids else settings
            configurations.append((configuration.name, canonical))
        return configurations

    def _start_generation(self) -> _Generation:
        if self.generation == 0:
            candidates: list[Candidate] = []
            for name, settings in self._baseline_settings():
                candidate = self._remember(Candidate(settings.candidate_id(), 0, settings, baseline=name))
                if all(c.candidate_id != candidate.candidate_id for c in candidates):
                    candidates.append(candidate)
            return _Generation(0, candidates)
        screening = self.spec.algorithm.screening is not None
        evidence = self._evidence_candidates()
        own = Part.SCREEN if screening else Part.WHOLE
        generation = _Generation(
            self.generation,
            [],
            part=Part.EVIDENCE if evidence else own,
            evidence=evidence,
            after_evidence=own,
        )
        for genome in self._nsga.ask():
            settings = self.encoding.decode(genome)
            candidate = self._remember(Candidate(settings.candidate_id(), self.generation, settings))
            generation.genomes.append(genome)
            generation.genome_ids.append(candidate.candidate_id)
            if all(c.candidate_id != candidate.candidate_id for c in generation.candidates):
                generation.candidates.append(candidate)
            if candidate.candidate_id not in self._search_ids:
                self._search_ids.append(candidate.candidate_id)
        return generation

    def _remember(self, candidate: Candidate) -> Candidate:
        return self._candidates.setdefault(candidate.candidate_id, candidate)

    def _complete_if_done(self) -> bool:
        current = self._current
        if current is None or current.part is Part.EVIDENCE:
            return False
        if any(c.candidate_id not in self._results for c in current.candidates):
            return False
        if current.number == 0:
            self._complete_baselines()
        else:
            self._tell_nsga(current)
            self.hypervolume_history.append(self.current_hypervolume())
        self._current = None
        self.generation += 1
        if self._stopped is None:
            self._stopped = self._termination()
            if self._stopped is not None and not self._stopped.failed and self.spec.validation is not None:
                self._search_end, self._stopped = self._stopped, None
                self._validation = self._start_validation()
        return True

    # ------------------------------------------------------------------ held-out validation

    def _start_validation(self) -> _Generation:
        """The defaults and the chosen front points, evaluated again on held-out prompts."""
        assert self.spec.validation is not None
        defaults = self._candidates[CandidateSettings().candidate_id()]
        chosen = [
            Candidate(defaults.candidate_id, self.generation, defaults.settings, role=DEFAULTS_BASELINE)
        ]
        for role, point in choose_points(self.front(), self.normalised, self.spec.validation.points):
            if all(c.candidate_id != point.candidate.candidate_id for c in chosen):
                chosen.append(
                    Candidate(
                        point.candidate.candidate_id, self.generation, point.candidate.settings, role=role
                    )
                )
        return _Generation(self.generation, chosen)

    def _tell_validation(self, result: EvaluationResult) -> None:
        validation = self._validation
        assert validation is not None
        if all(c.candidate_id != result.candidate_id for c in validation.candidates):
            raise ValueError(f"candidate {result.candidate_id} is not being validated")
        if result.candidate_id in self._validation_results:
            raise ValueError(f"candidate {result.candidate_id} already has a validation result")
        self._validation_results[result.candidate_id] = result
        self.validation_told.append(result)
        if all(c.candidate_id in self._validation_results for c in validation.candidates):
            self._stopped = self._search_end

    def validation(self) -> list[tuple[Candidate, EvaluationResult | None]]:
        """The validated candidates (the defaults first) and their held-out results so far."""
        if self._validation is None:
            return []
        return [(c, self._validation_results.get(c.candidate_id)) for c in self._validation.candidates]

    def _complete_baselines(self) -> None:
        defaults = self._results[CandidateSettings().candidate_id()]
        if defaults.metrics is None:
            self._stopped = Outcome(
                OutcomeState.FAILED,
                OutcomeReason.BASELINE_FAILED,
                f"the model's default settings could not be evaluated ({defaults.reason}); "
                "the quality constraint and the energy scale refer to them",
            )
            return
        self._scales = objective_scales(self.spec.objectives, defaults.metrics)
        self.defaults_device = defaults.device.name if defaults.device is not None else None
        quality = self.spec.constraints.quality
        if quality.enabled:
            self.quality_threshold = (1.0 - quality.tolerance) * defaults.metrics.quality

    def _tell_nsga(self, generation: _Generation) -> None:
        objectives, constraints = [], []
        for candidate_id in generation.genome_ids:
            result = self._results[candidate_id]
            if result.metrics is None:
                objectives.append([0.0] * len(self.spec.objectives))
                constraints.append(self.constraint_values(result))
                continue
            values = self._objective_values(result.metrics)
            objectives.append([s.minimised(v) for s, v in zip(self._scales_or_raise(), values, strict=True)])
            constraints.append(self.constraint_values(result))
        self._nsga.tell(objectives, constraints)

    def _termination(self) -> Outcome | None:
        algorithm = self.spec.algorithm
        done = self.generation - 1  # NSGA-II generations completed

        def succeeded(reason: OutcomeReason, message: str) -> Outcome:
            return Outcome(OutcomeState.SUCCEEDED, reason, message)

        if done >= algorithm.generations:
            return succeeded(
                OutcomeReason.GENERATIONS_COMPLETED, f"completed {algorithm.generations} generations"
            )
        budget = algorithm.termination.max_evaluations
        if budget is not None and self.evaluations + algorithm.population_size > budget:
            return succeeded(
                OutcomeReason.EVALUATION_BUDGET,
                f"evaluation budget: another generation would exceed {budget} evaluations",
            )
        energy = algorithm.termination.energy_budget_joules
        if energy is not None and self.total_energy_joules >= energy:
            return succeeded(
                OutcomeReason.ENERGY_BUDGET,
                f"energy budget: {self.total_energy_joules:.0f} J used of {energy:.0f} J",
            )
        stagnation = algorithm.termination.hypervolume_stagnation
        history = self.hypervolume_history
        if stagnation is not None and len(history) > stagnation.generations:
            before, now = history[-1 - stagnation.generations], history[-1]
            if now - before <= stagnation.tolerance * max(before, 1e-12):
                return succeeded(
                    OutcomeReason.HYPERVOLUME_STAGNATION,
                    f"hypervolume stagnation: improved by {now - before:.3g} over the last "
                    f"{stagnation.generations} generations",
                )
        return None


def _settings_of(configuration: Configuration) -> CandidateSettings:
    return CandidateSettings(
        inference_steps=configuration.inference_steps,
        guidance_scale=configuration.guidance_scale,
        positive_keywords=list(configuration.positive_keywords),
        negative_keywords=list(configuration.negative_keywords),
        prompt_weight=configuration.prompt_weight
        if configuration.positive_keywords or configuration.negative_keywords
        else 0,
    )
