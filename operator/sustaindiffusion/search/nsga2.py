"""NSGA-II over mixed variables with pymoo, driven by ask and tell.

pymoo's `NSGA2` handles real vectors only; its `MixedVariableGA` handles mixed variables but
defaults to random parent selection and single-objective survival. This module puts the two
together as NSGA-II proper: binary tournament on constraint violation, rank and crowding;
rank-and-crowding survival; per-type crossover (SBX for numbers, uniform for bits) and mutation
(polynomial for numbers, bit flip for bits); duplicate elimination (of equal genomes, or of genomes
with an equal key: the same settings in canonical form). The random generator is
seeded once at `setup`, so for a seed the sequence of asked populations is fixed, and a fresh
instance told the same results in the same order asks the same next population.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import binary_tournament
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.evaluator import Evaluator
from pymoo.core.mixed import MixedVariableDuplicateElimination, MixedVariableGA, MixedVariableMating
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.variable import Binary, Choice, Integer, Real, Variable
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.crossover.ux import UX
from pymoo.operators.mutation.bitflip import BFM
from pymoo.operators.mutation.pm import PM
from pymoo.operators.mutation.rm import ChoiceRandomMutation
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.selection.tournament import TournamentSelection
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding
from pymoo.problems.static import StaticProblem
from pymoo.util.display.multi import MultiObjectiveOutput
from pymoo.util.misc import has_feasible

Genome = dict[str, Any]
GenomeKey = Callable[[Genome], Hashable]


class EquivalentGenomes(DuplicateElimination):  # type: ignore[misc]
    """Genomes are duplicates when their keys are equal: one pass over a set of keys (pymoo's
    element-wise elimination compares every pair, and each comparison would decode two genomes)."""

    def __init__(self, key: GenomeKey) -> None:
        super().__init__()
        self.key = key

    def _do(self, pop: Population, other: Population | None, is_duplicate: np.ndarray) -> np.ndarray:
        seen = {self.key(_plain(individual.X)) for individual in other} if other is not None else set()
        for index, individual in enumerate(pop):
            key = self.key(_plain(individual.X))
            if key in seen:
                is_duplicate[index] = True
            else:
                seen.add(key)
        return is_duplicate


class MixedVariableNSGA2(MixedVariableGA):  # type: ignore[misc]
    """NSGA-II selection and survival on pymoo's mixed-variable genetic algorithm."""

    def __init__(
        self,
        pop_size: int,
        crossover_probability: float = 0.9,
        mutation_probability: float | None = None,
        key: GenomeKey | None = None,
    ) -> None:
        crossover = {
            Binary: UX(prob=crossover_probability),
            Real: SBX(eta=15, prob=crossover_probability),
            Integer: SBX(eta=15, prob=crossover_probability, vtype=float, repair=RoundingRepair()),
            Choice: UX(prob=crossover_probability),
        }
        # prob_var=None keeps pymoo's default per-variable rate (1/number of variables of that type).
        mutation = {
            Binary: BFM(prob_var=mutation_probability),
            Real: PM(eta=20, prob_var=mutation_probability),
            Integer: PM(eta=20, prob_var=mutation_probability, vtype=float, repair=RoundingRepair()),
            Choice: ChoiceRandomMutation(prob_var=mutation_probability),
        }
        duplicates = MixedVariableDuplicateElimination() if key is None else EquivalentGenomes(key)
        super().__init__(
            pop_size=pop_size,
            mating=MixedVariableMating(
                selection=TournamentSelection(func_comp=binary_tournament),
                crossover=crossover,
                mutation=mutation,
                eliminate_duplicates=duplicates,
            ),
            eliminate_duplicates=duplicates,
            survival=RankAndCrowding(),
            output=MultiObjectiveOutput(),
            advance_after_initial_infill=True,
        )
        # Read by pymoo's binary_tournament.
        self.tournament_type = "comp_by_dom_and_crowding"

    def _set_optimum(self, **kwargs: Any) -> None:
        if not has_feasible(self.pop):
            self.opt = self.pop[[np.argmin(self.pop.get("CV"))]]
        else:
            self.opt = self.pop[self.pop.get("rank") == 0]


class AskTellNSGA2:
    """Ask for a population of genomes, tell their objective (and constraint) values, repeat.

    Objectives are minimised; constraints are `g <= 0` for feasible. A failed evaluation is told
    as infeasible with a large violation, so it never becomes a parent ahead of a real result.
    """

    def __init__(
        self,
        variables: Mapping[str, Variable],
        n_objectives: int,
        n_constraints: int,
        pop_size: int,
        seed: int,
        crossover_probability: float = 0.9,
        mutation_probability: float | None = None,
        key: GenomeKey | None = None,
    ) -> None:
        """`key`: genomes with equal keys are duplicates (absent: equal genomes only)."""
        self.problem = Problem(vars=dict(variables), n_obj=n_objectives, n_ieq_constr=n_constraints)
        self.algorithm = MixedVariableNSGA2(pop_size, crossover_probability, mutation_probability, key)
        self.algorithm.setup(self.problem, seed=seed, verbose=False)
        self._asked: Population | None = None

    def ask(self) -> list[Genome]:
        if self._asked is None:
            self._asked = self.algorithm.ask()
        return [_plain(individual.X) for individual in self._asked]

    def population(self) -> list[tuple[list[float], bool]]:
        """The current population (the survivors so far): each member's minimised objective values
        and whether it is feasible; empty before the first tell."""
        population = self.algorithm.pop
        if population is None or len(population) == 0:
            return []
        violations = population.get("CV")
        return [
            ([float(value) for value in objectives], float(violation[0]) <= 0.0)
            for objectives, violation in zip(population.get("F"), violations, strict=True)
        ]

    def population_keys(self, key: GenomeKey) -> list[Hashable]:
        """The key of each member of the current population, in `population()`'s order."""
        population = self.algorithm.pop
        if population is None:
            return []
        return [key(_plain(individual.X)) for individual in population]

    def revise(
        self, values: Mapping[Hashable, tuple[Sequence[float], Sequence[float]]], key: GenomeKey
    ) -> int:
        """New objective and constraint values for the population members whose `key` is in `values`
        (their estimates, sharpened by more evidence), before the next survival ranks them; returns
        how many members were revised."""
        population = self.algorithm.pop
        if population is None or not values:
            return 0
        members = [i for i, individual in enumerate(population) if key(_plain(individual.X)) in values]
        if not members:
            return 0
        revised = population[members]
        told = [values[key(_plain(individual.X))] for individual in revised]
        static = StaticProblem(
            self.problem,
            F=np.asarray([objectives for objectives, _ in told], dtype=float),
            G=np.asarray([constraints for _, constraints in told], dtype=float),
        )
        Evaluator().eval(static, revised, skip_already_evaluated=False, count_evals=False)
        return len(members)

    def tell(
        self, objectives: Sequence[Sequence[float]], constraints: Sequence[Sequence[float]] | None = None
    ) -> None:
        """Values for the asked genomes, in the order asked."""
        if self._asked is None:
            raise RuntimeError("tell() without a pending ask()")
        if len(objectives) != len(self._asked):
            raise ValueError(f"told {len(objectives)} results for {len(self._asked)} asked genomes")
        values: dict[str, np.ndarray] = {"F": np.asarray(objectives, dtype=float)}
        if self.problem.n_ieq_constr:
            if constraints is None:
                raise ValueError("this problem has constraints: tell their values too")
            values["G"] = np.asarray(constraints, dtype=float)
        Evaluator().eval(StaticProblem(self.problem, **values), self._asked)
        self.algorithm.tell(infills=self._asked)
        self._asked = None


def _plain(genome: Mapping[str, Any]) -> Genome:
    """numpy scalars to plain Python values, so genomes hash, compare and serialise simply."""
    plain: Genome = {}
    for name, value in genome.items():
        if isinstance(value, np.bool_ | bool):
            plain[name] = bool(value)
        elif isinstance(value, np.integer):
            plain[name] = int(value)
        elif isinstance(value, np.floating):
            plain[name] = float(value)
        else:
            plain[name] = value
    return plain
