"""What the search knows: every candidate it asked, every result it was told, keyed as the archive
keys it (`records.record_key`), and the totals over them. The one answer to "what do we know about
candidate X": its settings and where it first appeared, its final result (the merge of its parts),
the images per prompt that result rests on, the generation that evaluated it, and each part as told.

A candidate's final result is told once (`record`); more evidence may sharpen it later (`sharpen`),
in place, so `told` keeps the order in which candidates were first final. Held-out results stay
apart (`validation_told`). The totals count what was generated: finals, held-out results, and
screening passes whose candidate has no final result yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.results import EvaluationResult, Screened
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.records import record_key


@dataclass(frozen=True)
class Candidate:
    candidate_id: str
    generation: int
    settings: CandidateSettings
    baseline: str | None = None  # the baseline's name in generation 0, None for search candidates
    role: str | None = None  # in validation: "defaults", "knee", "best GenderBias", "spread"


@dataclass(frozen=True)
class ScreeningTally:
    screened: int  # candidates with a final result after a screening pass
    screened_out: int
    incomplete: int  # survivors whose rest of images failed
    images_saved: int  # images the screened-out candidates did not generate


class Ledger:
    def __init__(self) -> None:
        self.told: list[EvaluationResult] = []  # each candidate's final result, in the order told
        self.validation_told: list[EvaluationResult] = []  # held-out results, in the order told
        self._final: dict[str, EvaluationResult] = {}
        self._at: dict[str, int] = {}  # candidate id -> its index in `told`
        self._evaluated_in: dict[str, int] = {}  # candidate id -> generation whose batch evaluated it
        self._images_per_prompt: dict[str, int] = {}  # candidate id -> images its final rests on
        self._candidates: dict[str, Candidate] = {}  # first appearance of each id
        self._searched: dict[str, int] = {}  # ids in NSGA-II generations -> first one; first-seen order
        self._parts: dict[str, tuple[Part, EvaluationResult]] = {}  # every result as told, by record key
        self._bounded: dict[str, tuple[list[float], list[float]]] = {}  # told NSGA-II in place of estimates

    # ------------------------------------------------------------------ candidates

    def remember(self, candidate: Candidate) -> Candidate:
        """The candidate as it first appeared."""
        return self._candidates.setdefault(candidate.candidate_id, candidate)

    def candidate(self, candidate_id: str) -> Candidate:
        return self._candidates[candidate_id]

    def baselines(self) -> list[Candidate]:
        return [c for c in self._candidates.values() if c.baseline]

    def join_search(self, candidate_id: str, generation: int) -> None:
        self._searched.setdefault(candidate_id, generation)

    def search_ids(self, before: int | None = None) -> list[str]:
        """Ids that took part in an NSGA-II generation (before generation `before`), first-seen order."""
        return [i for i, first in self._searched.items() if before is None or first < before]

    # ------------------------------------------------------------------ results

    def tell(self, part: Part, generation: int, result: EvaluationResult, batch: int = 0) -> None:
        """A result as told to a part (not yet a candidate's final result: see `record`)."""
        self._parts[record_key(part, generation, result.candidate_id, batch)] = (part, result)

    def told_as(
        self, part: Part, generation: int, candidate_id: str, batch: int = 0
    ) -> EvaluationResult | None:
        told = self._parts.get(record_key(part, generation, candidate_id, batch))
        return told[1] if told is not None else None

    def bound(self, candidate_id: str, values: tuple[list[float], list[float]] | None) -> None:
        """What NSGA-II is told of a candidate in place of its estimate (its objectives and
        constraints at its best plausible values, while its estimate rests on part of a whole
        evaluation), or None: its estimate again."""
        if values is None:
            self._bounded.pop(candidate_id, None)
        else:
            self._bounded[candidate_id] = values

    def bounded(self, candidate_id: str) -> tuple[list[float], list[float]] | None:
        return self._bounded.get(candidate_id)

    def record(self, result: EvaluationResult, generation: int, images_per_prompt: int) -> None:
        """A candidate's final result, evaluated by `generation`'s batch."""
        candidate_id = result.candidate_id
        self._final[candidate_id] = result
        self._evaluated_in[candidate_id] = generation
        self._at[candidate_id] = len(self.told)
        self._images_per_prompt[candidate_id] = images_per_prompt
        self.told.append(result)

    def sharpen(self, result: EvaluationResult, images_per_prompt: int) -> None:
        """A final result that more images made sharper, in its place."""
        candidate_id = result.candidate_id
        self._final[candidate_id] = result
        self.told[self._at[candidate_id]] = result
        self._images_per_prompt[candidate_id] += images_per_prompt

    def record_validation(self, result: EvaluationResult, generation: int) -> None:
        self.tell(Part.VALIDATION, generation, result)
        self.validation_told.append(result)

    def result(self, candidate_id: str) -> EvaluationResult | None:
        """The candidate's final result, if it has one."""
        return self._final.get(candidate_id)

    def evaluated_in(self, candidate_id: str) -> int | None:
        return self._evaluated_in.get(candidate_id)

    def images_per_prompt(self, candidate_id: str) -> int:
        return self._images_per_prompt[candidate_id]

    # ------------------------------------------------------------------ totals

    @property
    def evaluations(self) -> int:
        return len(self._final)

    @property
    def failures(self) -> int:
        """Candidates without a full evaluation for a failure: failed, or screened and incomplete."""
        return sum(1 for r in self._final.values() if not r.ok or r.screened is Screened.INCOMPLETE)

    def energy_joules(self) -> tuple[float, float]:
        """GPU and CPU joules of every evaluation so far, summed exactly (`math.fsum`), so the total
        does not depend on the order in which shards reported. A final result holds its parts'."""
        first_passes = [
            r for part, r in self._parts.values() if part is Part.SCREEN and r.candidate_id not in self._final
        ]
        measured = [
            r.metrics for r in (*self.told, *self.validation_told, *first_passes) if r.metrics is not None
        ]
        return math.fsum(m.gpu_joules for m in measured), math.fsum(m.cpu_joules for m in measured)

    @property
    def total_energy_joules(self) -> float:
        return math.fsum(self.energy_joules())

    def devices(self) -> list[str]:
        """The GPU models (or cpu) that results were measured on, sorted."""
        told = (*self.told, *self.validation_told)
        return sorted({r.device.name for r in told if r.device is not None and r.metrics is not None})

    def screening_tally(self, images_per_prompt: int, screened_per_prompt: int) -> ScreeningTally:
        final = [r for r in self._final.values() if r.screened is not None]
        out = [r for r in final if r.screened is Screened.OUT]
        saved = sum(
            r.metrics.images * (images_per_prompt - screened_per_prompt) // screened_per_prompt
            for r in out
            if r.metrics is not None
        )
        return ScreeningTally(
            screened=len(final),
            screened_out=len(out),
            incomplete=sum(1 for r in final if r.screened is Screened.INCOMPLETE),
            images_saved=saved,
        )
