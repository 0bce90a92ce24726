"""A generation's NSGA-II population: asked as genomes, decoded to candidates (remembered in the
ledger, where they join the search), and told back, genome by genome, the values of their final
results once the generation's phases are done (or, for a result that rests on part of a whole
evaluation, the best plausible values the ledger holds for it)."""

from __future__ import annotations

from dataclasses import dataclass

from sustaindiffusion.search.encoding import SearchSpaceEncoding
from sustaindiffusion.search.ledger import Candidate, Ledger
from sustaindiffusion.search.nsga2 import AskTellNSGA2
from sustaindiffusion.search.reference import Reference


@dataclass(frozen=True)
class Population:
    """Each genome's candidate id (in asked order, with repeats: NSGA-II is told a value per genome)
    and the distinct candidates, in asked order."""

    genome_ids: tuple[str, ...]
    candidates: tuple[Candidate, ...]

    @classmethod
    def ask(
        cls, nsga: AskTellNSGA2, encoding: SearchSpaceEncoding, ledger: Ledger, generation: int
    ) -> Population:
        genome_ids: list[str] = []
        candidates: dict[str, Candidate] = {}
        for genome in nsga.ask():
            settings = encoding.decode(genome)
            candidate = ledger.remember(Candidate(settings.candidate_id(), generation, settings))
            genome_ids.append(candidate.candidate_id)
            candidates.setdefault(candidate.candidate_id, candidate)
            ledger.join_search(candidate.candidate_id, generation)
        return cls(tuple(genome_ids), tuple(candidates.values()))

    def tell(self, nsga: AskTellNSGA2, ledger: Ledger, reference: Reference) -> None:
        """Each genome's values: its result's, or what the ledger bounds it by (`Ledger.bound`)."""
        told = []
        for candidate_id in self.genome_ids:
            result = ledger.result(candidate_id)
            if result is not None:
                told.append(ledger.bounded(candidate_id) or reference.told_values(result))
        nsga.tell([objectives for objectives, _ in told], [constraints for _, constraints in told])
