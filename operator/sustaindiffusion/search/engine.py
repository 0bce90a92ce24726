"""The search engine: one ask/tell API shared by the operator and the local runner, and the owner
of the search's outcome.

    engine = SearchEngine(spec)
    while not engine.outcome().finished:
        plan = engine.plan()                  # the current phase's work: candidates and images
        for candidate in engine.ask():        # its candidates still to evaluate
            engine.tell(evaluate(candidate))  # any order; the phase's last result moves the search on
    engine.outcome()                          # Succeeded or Failed, with a reason and a message

The engine sequences phases (`search.phases`), as pymoo composes an algorithm from operators:
generation 0 evaluates the baselines, whose defaults fix the reference (`search.reference`);
each generation 1..N asks NSGA-II for a population and runs the generation's phases in order
(by default more evidence for the front, then screening or the whole evaluation of its new
candidates), then tells NSGA-II the population's values; when a stopping rule fires, held-out
validation may follow. What it was told lives in the ledger (`search.ledger`). Candidates are
settings in canonical form, so equivalent genomes are one candidate; a candidate evaluated before
(same id) is not asked again: its recorded result is reused.

Reading the engine never changes it: the tell that completes a phase starts the next one (the next
generation's population is asked then), and the engine is at rest between tells.

The outcome is the engine's alone: running; failed because the defaults could not be evaluated
or more candidates failed than `execution.maxFailedCandidates` allows; or succeeded when a stopping
rule fired (`search.outcome`). Callers ask `outcome()`; none re-derives it.

Resume: `SearchEngine.from_archive(spec, records)` (or `replay(spec, results)`) feeds recorded
results, in the order they were told, to a fresh engine. pymoo's generator is seeded once, so the
replayed engine reaches the identical state and asks the identical next candidates. Nothing is
pickled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sustaindiffusion.api.results import EvaluationResult, Metrics
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.encoding import SearchSpaceEncoding
from sustaindiffusion.search.ledger import Candidate, Ledger, ScreeningTally
from sustaindiffusion.search.nsga2 import AskTellNSGA2
from sustaindiffusion.search.outcome import (
    Outcome,
    baseline_failed,
    running,
    stopping_rule,
    too_many_failures,
)
from sustaindiffusion.search.phases import adaptive, baselines, evidence, generation, screening, validation
from sustaindiffusion.search.phases.base import Context, ImagePlan, Phase, PhaseStart
from sustaindiffusion.search.population import Population
from sustaindiffusion.search.records import ArchiveRecord, uses_canonical_ids
from sustaindiffusion.search.reference import CONSTRAINTS, DEFAULTS_ID, FrontPoint, Reference


class ReplayMismatchError(RuntimeError):
    """Recorded results do not belong to the candidates this spec and seed ask for."""


def generation_phases(spec: SustainSearchSpec) -> tuple[PhaseStart, ...]:
    """The phases of a search generation, in order: with the adaptive evidence policy, its
    sequential batches alone (they give the front its evidence too); otherwise more evidence for
    the front (from generation 2, when the spec asks for it), then the generation's new candidates,
    screened or whole."""
    if spec.algorithm.adaptive is not None:
        return (adaptive.start,)
    own = screening.start if spec.algorithm.screening is not None else generation.start
    return evidence.start, own


class SearchEngine:
    def __init__(
        self,
        spec: SustainSearchSpec,
        canonical_ids: bool = True,
        phases: Sequence[PhaseStart] | None = None,
    ) -> None:
        """`canonical_ids`: candidates are the canonical form of their settings, and genomes with
        equal canonical settings are duplicates; off only for archives begun before (see
        `records.uses_canonical_ids`), which replay as they were recorded. `phases`: those of a
        search generation (default: `generation_phases(spec)`)."""
        self.spec = spec
        self.canonical_ids = canonical_ids
        self.encoding = SearchSpaceEncoding(spec.search_space, canonical=canonical_ids)
        algorithm = spec.algorithm
        self.nsga = AskTellNSGA2(
            self.encoding.variables(),
            n_objectives=len(spec.objectives),
            n_constraints=len(CONSTRAINTS),
            pop_size=algorithm.population_size,
            seed=algorithm.seed,
            crossover_probability=algorithm.crossover_probability,
            mutation_probability=algorithm.mutation_probability,
            key=(lambda genome: self.encoding.decode(genome).candidate_id()) if canonical_ids else None,
        )
        self.ledger = Ledger()
        self.reference = Reference(spec)  # unfixed until the defaults are evaluated
        self.generation = 0
        self.hypervolume_history: list[float] = []
        self.population: Population | None = None  # the current generation's, as asked
        self._phase_starts = tuple(phases) if phases is not None else generation_phases(spec)
        self._phases: list[Phase] = [baselines.start(self._context())]  # the current one first
        self._validation: validation.Validation | None = None
        self._stopped: Outcome | None = None  # set when the baseline fails or a stopping rule fires
        self._search_end: Outcome | None = None  # how the search ended, while its validation runs
        self._advance()

    # ------------------------------------------------------------------ outcome

    def outcome(self) -> Outcome:
        """Running, or how the search ended. The failure limit is the spec's current one, so raising
        `execution.maxFailedCandidates` lets a search that failed for it go on."""
        if self._stopped is not None and self._stopped.failed:
            return self._stopped  # the baseline failed: nothing else can be said
        failed = too_many_failures(self.failures, self.spec.execution.max_failed_candidates)
        if failed is not None:
            return failed
        if self._stopped is not None:
            return self._stopped
        if self._validation is not None:
            points = len(self._validation.candidates()) - 1
            return running(f"validating the defaults and {points} front points on held-out prompts", True)
        return running(f"generation {self.generation}")

    # ------------------------------------------------------------------ ask / tell

    @property
    def _phase(self) -> Phase | None:
        return self._phases[0] if self._phases else None

    @property
    def part(self) -> Part:
        """The part of the search the current phase runs (whole when none runs)."""
        return self._phase.part if self._phase is not None else Part.WHOLE

    @property
    def batch(self) -> int:
        """The sequential batch the current phase is in (the adaptive policy's; 0 for the others)."""
        return self._phase.plan().batch if self._phase is not None else 0

    def plan(self) -> ImagePlan:
        """The current phase's work: its candidates and the images each generates."""
        if self._phase is None:
            raise RuntimeError(f"no phase runs: the search stopped ({self.outcome().message})")
        return self._phase.plan()

    def current_candidates(self) -> list[Candidate]:
        """The candidates the current phase evaluates, done or not, in asked order (a candidate
        evaluated in an earlier generation is not among them: its result is reused). Stable across
        restarts, so a phase's task is the same whenever it is built."""
        return self._phase.candidates() if self._phase is not None else []

    def ask(self) -> list[Candidate]:
        """The current phase's candidates that still need a result, while the search runs."""
        return self.pending() if not self.outcome().finished else []

    def pending(self) -> list[Candidate]:
        """The current phase's candidates without a result. A search that failed for too many
        failures mid-generation still lists the rest, so results already produced can be told."""
        return self._phase.pending() if self._phase is not None else []

    def tell(self, result: EvaluationResult, part: Part | None = None, batch: int | None = None) -> None:
        """Record one result of the current phase (whose `part`, and sequential `batch`, the
        caller may name to have them checked); the phase's last one moves the search on."""
        phase = self._phase
        if phase is None:
            raise ValueError(
                f"candidate {result.candidate_id} is not pending in generation {self.generation}"
            )
        if part is not None and part is not phase.part:
            raise ValueError(
                f"a result of the {part.value} part told to the {phase.part.value} part of "
                f"generation {self.generation}"
            )
        if batch is not None and batch != self.batch:
            raise ValueError(
                f"a result of batch {batch} told to batch {self.batch} of generation {self.generation}"
            )
        phase.tell(result)
        self._advance()

    # ------------------------------------------------------------------ transitions

    def _context(self) -> Context:
        return Context(
            self.spec, self.generation, self.ledger, self.reference, self.nsga, self.encoding, self.population
        )

    def _advance(self) -> None:
        """Past every phase that is done: the generation's next phase, its completion and the next
        generation, validation, or the end."""
        while self._phases and self._phases[0].done:
            done = self._phases.pop(0)
            if done is self._validation:
                self._stopped = self._search_end
            elif not self._phases:
                self._complete_generation()

    def _complete_generation(self) -> None:
        if self.generation == 0:
            defaults = self.ledger.result(DEFAULTS_ID)
            assert defaults is not None
            reference = Reference.of_defaults(self.spec, defaults)
            if reference is None:
                self._stopped = baseline_failed(defaults.reason)
            else:
                self.reference = reference
        else:
            assert self.population is not None
            self.population.tell(self.nsga, self.ledger, self.reference)
            self.hypervolume_history.append(self.reference.hypervolume(self.ledger))
        self.generation += 1
        self.population = None
        if self._stopped is None:
            self._stopped = stopping_rule(
                self.spec,
                self.generation - 1,
                self.evaluations,
                self.total_energy_joules,
                self.hypervolume_history,
            )
            if self._stopped is not None and self.spec.validation is not None:
                self._search_end, self._stopped = self._stopped, None
                self._validation = validation.start(self._context())
                self._phases = [self._validation] if self._validation is not None else []
                return
        if self._stopped is None and self.failures <= self.spec.execution.max_failed_candidates:
            self._start_generation()

    def _start_generation(self) -> None:
        self.population = Population.ask(self.nsga, self.encoding, self.ledger, self.generation)
        context = self._context()
        self._phases = [phase for start in self._phase_starts if (phase := start(context)) is not None]

    # ------------------------------------------------------------------ replay

    @classmethod
    def replay(
        cls,
        spec: SustainSearchSpec,
        results: Iterable[EvaluationResult | tuple[Part | None, EvaluationResult] | ArchiveRecord],
        canonical_ids: bool = True,
    ) -> SearchEngine:
        """A fresh engine fed recorded results in order: the state of the engine that recorded them.
        A result may come with its record's part (and, as a record, its generation and batch),
        which must be where the engine is. An exact repeat of a result already told is dropped (an
        append that was retried)."""
        engine = cls(spec, canonical_ids)
        for item in results:
            batch: int | None = None
            part: Part | None
            if isinstance(item, ArchiveRecord):
                part, result, batch = item.part, item.result, item.batch
                if part is Part.BATCH:
                    told_then = engine.ledger.told_as(part, item.generation, result.candidate_id, batch or 0)
                    if told_then == result:
                        continue  # a repeat of a batch already told, whatever came after it
            else:
                part, result = item if isinstance(item, tuple) else (None, item)
            phase = engine._phase
            told = phase.told(result.candidate_id) if phase else engine.ledger.result(result.candidate_id)
            if told == result:
                continue
            pending = {c.candidate_id for c in engine.pending()}
            if part is not None and engine._stopped is None and part is not engine.part:
                raise ReplayMismatchError(
                    f"recorded {part.value} result for {result.candidate_id} where generation "
                    f"{engine.generation} of this spec is in its {engine.part.value} part"
                )
            if batch is not None and engine._stopped is None and batch != engine.batch:
                raise ReplayMismatchError(
                    f"recorded batch {batch} result for {result.candidate_id} where generation "
                    f"{engine.generation} of this spec is in batch {engine.batch}"
                )
            if result.candidate_id not in pending:
                if engine._stopped is not None:
                    break  # a spec whose budget was lowered meanwhile: the rest came after its end
                raise ReplayMismatchError(
                    f"recorded result for {result.candidate_id} does not match generation "
                    f"{engine.generation} of this spec and seed (pending: {sorted(pending)}); "
                    "the archive belongs to another search"
                )
            engine.tell(result, part, batch)
        return engine

    @classmethod
    def from_archive(cls, spec: SustainSearchSpec, records: Sequence[ArchiveRecord]) -> SearchEngine:
        """`replay` of an archive's records, with the candidate identity the archive began with."""
        return cls.replay(spec, records, uses_canonical_ids(records))

    # ------------------------------------------------------------------ views

    @property
    def told(self) -> list[EvaluationResult]:
        """Each candidate's final result, in the order told."""
        return self.ledger.told

    @property
    def validation_told(self) -> list[EvaluationResult]:
        return self.ledger.validation_told

    def result(self, candidate_id: str) -> EvaluationResult | None:
        return self.ledger.result(candidate_id)

    def candidate(self, candidate_id: str) -> Candidate:
        return self.ledger.candidate(candidate_id)

    def baselines(self) -> list[tuple[Candidate, EvaluationResult | None]]:
        return [(c, self.ledger.result(c.candidate_id)) for c in self.ledger.baselines()]

    def defaults_metrics(self) -> Metrics | None:
        """The model defaults' metrics from generation 0 (None before, or when they failed)."""
        result = self.ledger.result(DEFAULTS_ID)
        return result.metrics if result is not None else None

    def validation(self) -> list[tuple[Candidate, EvaluationResult | None]]:
        """The validated candidates (the defaults first) and their held-out results so far."""
        return self._validation.results() if self._validation is not None else []

    @property
    def evaluations(self) -> int:
        return self.ledger.evaluations

    @property
    def failures(self) -> int:
        return self.ledger.failures

    @property
    def total_energy_joules(self) -> float:
        return self.ledger.total_energy_joules

    def screening_tally(self) -> ScreeningTally | None:
        """What screening did so far (None when the spec does not screen)."""
        screening = self.spec.algorithm.screening
        if screening is None:
            return None
        return self.ledger.screening_tally(self.spec.prompts.images_per_prompt, screening.images_per_prompt)

    @property
    def quality_threshold(self) -> float | None:
        return self.reference.quality_threshold

    def front(self) -> list[FrontPoint]:
        """Non-dominated feasible results of the search so far; empty until the defaults are evaluated."""
        return self.reference.front(self.ledger)
