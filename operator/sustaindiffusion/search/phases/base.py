"""What every phase is: the protocol the engine sequences, the context a phase starts from, and the
image plan it hands a worker's task.

A phase owns its candidates, its image plan (which image indices per prompt, from which prompts
and seed stream), its `Part` (the archive's stage) and when it is done. It tells the ledger what it
was told; it never starts another phase: the engine does, when this one is done. A phase type is a
`PhaseStart`: given the context of a generation, the phase, or None when it has nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SeedPolicy, SustainSearchSpec
from sustaindiffusion.api.task import EvaluationTask, Part, TaskCandidate
from sustaindiffusion.search.encoding import SearchSpaceEncoding
from sustaindiffusion.search.ledger import Candidate, Ledger
from sustaindiffusion.search.nsga2 import AskTellNSGA2
from sustaindiffusion.search.population import Population
from sustaindiffusion.search.reference import Reference


@dataclass(frozen=True)
class ImagePlan:
    """The work of a phase now: its candidates and the images each generates (`first_image` on,
    `images_per_prompt` of them; a candidate in `own_first_image` starts at its own index), on the
    search's prompts or the held-out ones, with the spec's seeds unless `seeds`, in `seed_stream`."""

    part: Part
    generation: int
    candidates: tuple[Candidate, ...]  # done or not, in asked order: stable, so a task is too
    images_per_prompt: int
    first_image: int = 0
    own_first_image: Mapping[str, int] = field(default_factory=dict)
    held_out: bool = False  # the held-out prompts, else the search's
    seeds: SeedPolicy | None = None
    seed_stream: str = ""
    per_prompt: bool = False  # results carry per-prompt rows
    candidates_per_shard: int | None = None  # None: the spec's execution.candidatesPerPod
    task_part: Part | None = None  # how tasks name the part, where not `part`
    detail: str = ""  # what the launch event says of the images
    batch: int = 0  # the adaptive policy's sequential batch of the generation (its tasks' and records')

    def first_image_of(self, candidate_id: str) -> int | None:
        """Where the candidate's own images start, when they do not start at `first_image`."""
        return self.own_first_image.get(candidate_id)

    @property
    def part_on_tasks(self) -> Part:
        """The part as tasks name it."""
        return self.part if self.task_part is None else self.task_part

    def launched_as(self, task: EvaluationTask) -> bool:
        """Whether `task` is a round of this plan's part and batch (a generation's parts number
        their rounds on)."""
        return (
            task.part is self.part_on_tasks
            and task.seed_stream == self.seed_stream
            and task.batch == self.batch
        )

    def task(
        self, search: str, spec: SustainSearchSpec, prompts: list[str], save_images: bool, round: int
    ) -> EvaluationTask:
        """The worker task of one round of the plan."""
        candidates = [
            TaskCandidate(
                candidate_id=c.candidate_id,
                settings=c.settings,
                first_image=self.first_image_of(c.candidate_id),
            )
            for c in self.candidates
        ]
        per_shard = self.candidates_per_shard or spec.execution.candidates_per_pod
        task = EvaluationTask.of(
            search, spec, self.generation, prompts, candidates, per_shard, save_images, round
        )
        update: dict[str, object] = {
            "part": self.part_on_tasks,
            "first_image": self.first_image,
            "images_per_prompt": self.images_per_prompt,
            "seed_stream": self.seed_stream,
            "per_prompt": self.per_prompt,
        }
        if self.seeds is not None:
            update["seeds"] = self.seeds
        if self.batch:
            update["batch"] = self.batch
        adaptive = spec.algorithm.adaptive
        if adaptive is not None:  # every image of the search in calls of one batch (baselines too)
            update["call_images"] = adaptive.images_per_prompt
        return task.model_copy(update=update)


class Phase(Protocol):
    @property
    def part(self) -> Part: ...

    @property
    def done(self) -> bool: ...

    def candidates(self) -> list[Candidate]:
        """What the phase evaluates now, done or not, in asked order (stable across restarts)."""

    def pending(self) -> list[Candidate]:
        """Its candidates without a result yet."""

    def plan(self) -> ImagePlan: ...

    def told(self, candidate_id: str) -> EvaluationResult | None:
        """What the phase was told for the candidate, as told (a replay drops an exact repeat)."""

    def tell(self, result: EvaluationResult) -> None:
        """Record one result (ValueError if it is not the phase's to take)."""


@dataclass(frozen=True)
class Context:
    """What the phases of one generation start from."""

    spec: SustainSearchSpec
    generation: int
    ledger: Ledger
    reference: Reference
    nsga: AskTellNSGA2
    encoding: SearchSpaceEncoding
    population: Population | None = None  # None in generation 0 and at the end

    def new_candidates(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        """Those not evaluated by an earlier generation (their recorded results are reused)."""
        ledger, number = self.ledger, self.generation
        return [c for c in candidates if ledger.evaluated_in(c.candidate_id) in (None, number)]

    def not_pending(self, candidate_id: str) -> ValueError:
        return ValueError(f"candidate {candidate_id} is not pending in generation {self.generation}")


PhaseStart = Callable[[Context], Phase | None]


class ChosenOnce:
    """A phase over candidates chosen when it starts, each told once in this generation under the
    phase's part (more evidence, validation): what such phases share."""

    part: Part

    def __init__(self, context: Context, chosen: Sequence[Candidate]) -> None:
        self._context = context
        self._chosen = list(chosen)

    def candidates(self) -> list[Candidate]:
        return list(self._chosen)

    def told(self, candidate_id: str) -> EvaluationResult | None:
        return self._context.ledger.told_as(self.part, self._context.generation, candidate_id)

    def pending(self) -> list[Candidate]:
        return [c for c in self._chosen if self.told(c.candidate_id) is None]

    @property
    def done(self) -> bool:
        return not self.pending()


class WholeEvaluation:
    """Every candidate gets all its images per prompt at once, and its result is final (the
    baselines, and a generation without screening)."""

    part = Part.WHOLE

    def __init__(self, context: Context, candidates: Sequence[Candidate]) -> None:
        self._context = context
        self._candidates = list(candidates)  # distinct ids, in asked order

    def candidates(self) -> list[Candidate]:
        return self._context.new_candidates(self._candidates)

    def pending(self) -> list[Candidate]:
        ledger = self._context.ledger
        return [c for c in self._candidates if ledger.result(c.candidate_id) is None]

    @property
    def done(self) -> bool:
        return not self.pending()

    def plan(self) -> ImagePlan:
        context = self._context
        images = context.spec.prompts.images_per_prompt
        return ImagePlan(self.part, context.generation, tuple(self.candidates()), images)

    def told(self, candidate_id: str) -> EvaluationResult | None:
        return self._context.ledger.result(candidate_id)

    def tell(self, result: EvaluationResult) -> None:
        context, candidate_id = self._context, result.candidate_id
        if all(c.candidate_id != candidate_id for c in self._candidates):
            raise context.not_pending(candidate_id)
        if context.ledger.result(candidate_id) is not None:
            raise ValueError(f"candidate {candidate_id} already has a result")
        context.ledger.tell(self.part, context.generation, result)
        context.ledger.record(result, context.generation, context.spec.prompts.images_per_prompt)
