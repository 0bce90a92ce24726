"""How good is the search engine? Hypervolume of the evaluated points' non-dominated set, 10 seeds
each, equal evaluation budgets, for four ways of searching:

  ours     our ask/tell path (AskTellNSGA2: mixed-variable NSGA-II)
  pymoo    pymoo's own `minimize` (NSGA2; for the mixed problem MixedVariableGA + RankAndCrowding)
  research the research code's dynamics: mutation only, population of 5 kept wholesale, archive
  random   uniform random search

on ZDT1, ZDT2 (30 reals, 2 objectives), DTLZ2 (12 reals, 3 objectives) and KEYWORDS, a problem
shaped like our search space (two integers and 45 bits, 3 objectives, a known front on the unit
sphere). Then it times the engine's own overhead per generation (ask + tell + hypervolume) at
population 64 with 45 keyword bits.

    .venv/bin/python benchmarks/engine_quality.py [--seeds 10] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2, binary_tournament
from pymoo.core.duplicate import NoDuplicateElimination
from pymoo.core.individual import Individual
from pymoo.core.mixed import MixedVariableDuplicateElimination, MixedVariableMating, MixedVariableSampling
from pymoo.core.problem import ElementwiseProblem, Problem
from pymoo.core.variable import Binary, Integer, Real, Variable
from pymoo.indicators.hv import HV
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.crossover.ux import UX
from pymoo.operators.mutation.bitflip import BFM
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.selection.tournament import TournamentSelection
from pymoo.optimize import minimize
from pymoo.problems import get_problem
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from sustaindiffusion.api.results import EvaluationResult, Metrics
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.nsga2 import AskTellNSGA2

# ----------------------------------------------------------------------------- problems


class KeywordsProblem(ElementwiseProblem):  # type: ignore[misc]
    """Shaped like our search space: steps (integer 25..80), a guidance index (integer 0..200),
    20 "A" bits and 25 "B" bits. DTLZ2-like: positions from steps and the share of B bits set,
    distance from the guidance index (best at 60) and the share of A bits set (best: all). The
    Pareto front is the unit-sphere octant at the 56 x 26 reachable positions."""

    N_A, N_B = 20, 25

    def __init__(self) -> None:
        variables: dict[str, Variable] = {
            "steps": Integer(bounds=(25, 80)),
            "guidance": Integer(bounds=(0, 200)),
        }
        variables |= {f"a{i:02d}": Binary() for i in range(self.N_A)}
        variables |= {f"b{i:02d}": Binary() for i in range(self.N_B)}
        super().__init__(vars=variables, n_obj=3)

    def _evaluate(self, x: dict[str, Any], out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        p1 = (x["steps"] - 25) / 55
        p2 = sum(bool(x[f"b{i:02d}"]) for i in range(self.N_B)) / self.N_B
        share_a = sum(bool(x[f"a{i:02d}"]) for i in range(self.N_A)) / self.N_A
        distance = (x["guidance"] / 200 - 0.3) ** 2 + (1 - share_a) ** 2
        c1, s1 = np.cos(p1 * np.pi / 2), np.sin(p1 * np.pi / 2)
        c2, s2 = np.cos(p2 * np.pi / 2), np.sin(p2 * np.pi / 2)
        out["F"] = [(1 + distance) * c1 * c2, (1 + distance) * c1 * s2, (1 + distance) * s1]

    @staticmethod
    def true_front() -> np.ndarray:
        points = []
        for p1 in np.arange(56) / 55:
            for p2 in np.arange(26) / 25:
                c1, s1 = np.cos(p1 * np.pi / 2), np.sin(p1 * np.pi / 2)
                points.append([c1 * np.cos(p2 * np.pi / 2), c1 * np.sin(p2 * np.pi / 2), s1])
        return np.array(points)


def evaluate_genome(problem: ElementwiseProblem, genome: dict[str, Any]) -> list[float]:
    out: dict[str, Any] = {}
    problem._evaluate(genome, out)
    return list(out["F"])


def real_variables(problem: Problem) -> dict[str, Variable]:
    return {
        f"x{i:02d}": Real(bounds=(float(lo), float(hi)))
        for i, (lo, hi) in enumerate(zip(problem.xl, problem.xu, strict=True))
    }


@dataclass
class Benchmark:
    name: str
    problem: Problem
    mixed: bool
    pop_size: int
    generations: int
    reference: np.ndarray

    @property
    def budget(self) -> int:
        return self.pop_size * self.generations

    def variables(self) -> dict[str, Variable]:
        return dict(self.problem.vars) if self.mixed else real_variables(self.problem)

    def evaluate(self, genomes: list[dict[str, Any]]) -> np.ndarray:
        if self.mixed:
            return np.array([evaluate_genome(self.problem, g) for g in genomes])
        matrix = np.array([[g[f"x{i:02d}"] for i in range(self.problem.n_var)] for g in genomes])
        return np.asarray(self.problem.evaluate(matrix, return_as_dictionary=True)["F"])


def hypervolume_of(points: np.ndarray, reference: np.ndarray) -> float:
    front = points[NonDominatedSorting().do(points, only_non_dominated_front=True)]
    inside = front[np.all(front < reference, axis=1)]
    return float(HV(ref_point=reference)(inside)) if len(inside) else 0.0


# ----------------------------------------------------------------------------- methods


def run_ours(bench: Benchmark, seed: int) -> np.ndarray:
    search = AskTellNSGA2(bench.variables(), bench.problem.n_obj, 0, bench.pop_size, seed)
    evaluated: list[np.ndarray] = []
    while sum(len(e) for e in evaluated) < bench.budget:
        genomes = search.ask()
        values = bench.evaluate(genomes)
        evaluated.append(values)
        search.tell(values.tolist())
    return np.vstack(evaluated)[: bench.budget]


class _Recording(Problem):  # type: ignore[misc]
    """Wraps a problem and records every evaluated objective vector."""

    def __init__(self, inner: Problem) -> None:
        variables = getattr(inner, "vars", None)
        if variables is not None:
            super().__init__(vars=variables, n_obj=inner.n_obj)
        else:
            super().__init__(n_var=inner.n_var, n_obj=inner.n_obj, xl=inner.xl, xu=inner.xu)
        self.mixed = variables is not None
        self.inner = inner
        self.records: list[np.ndarray] = []

    def _evaluate(self, x: Any, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        if self.mixed:
            values = np.array([evaluate_genome(self.inner, g) for g in x])
        else:
            values = np.asarray(self.inner.evaluate(x, return_as_dictionary=True)["F"])
        self.records.append(values)
        out["F"] = values


def run_pymoo(bench: Benchmark, seed: int) -> np.ndarray:
    recording = _Recording(bench.problem)
    if bench.mixed:
        # pymoo's NSGA2 class, given pymoo's mixed-variable sampling, mating and duplicate handling.
        duplicates = MixedVariableDuplicateElimination()
        algorithm = NSGA2(
            pop_size=bench.pop_size,
            sampling=MixedVariableSampling(),
            mating=MixedVariableMating(
                selection=TournamentSelection(func_comp=binary_tournament), eliminate_duplicates=duplicates
            ),
            eliminate_duplicates=duplicates,
        )
    else:
        algorithm = NSGA2(pop_size=bench.pop_size)
    minimize(recording, algorithm, ("n_evals", bench.budget), seed=seed, verbose=False)
    return np.vstack(recording.records)[: bench.budget]


def run_research(bench: Benchmark, seed: int) -> np.ndarray:
    """Mutation only (crossover probability 0), a population of 5 replaced by its offspring
    every generation (no selection), and an archive of everything evaluated."""
    rng = np.random.default_rng(seed)
    variables = bench.variables()
    problem = Problem(vars=variables, n_obj=bench.problem.n_obj)
    mating = MixedVariableMating(
        crossover={
            Real: SBX(prob=0.0),
            Integer: SBX(prob=0.0, vtype=float, repair=RoundingRepair()),
            Binary: UX(prob=0.0),
        },
        mutation={Real: PM(eta=20), Integer: PM(eta=20, vtype=float, repair=RoundingRepair()), Binary: BFM()},
        eliminate_duplicates=NoDuplicateElimination(),
    )
    population = MixedVariableSampling()(problem, 5, random_state=rng)
    genomes = [dict(ind.X) for ind in population]
    archive = [bench.evaluate(genomes)]
    while sum(len(a) for a in archive) < bench.budget:
        parents = [Individual(X=g) for g in genomes]
        pairs = np.array([[parents[i], parents[(i + 1) % 5]] for i in range(0, 6, 2)], dtype=object)
        offspring = mating.do(problem, pairs, n_offsprings=6, parents=True, random_state=rng)
        genomes = [dict(ind.X) for ind in offspring][:5]
        archive.append(bench.evaluate(genomes))
    return np.vstack(archive)[: bench.budget]


def run_random(bench: Benchmark, seed: int) -> np.ndarray:
    problem = Problem(vars=bench.variables(), n_obj=bench.problem.n_obj)
    samples = MixedVariableSampling()(problem, bench.budget, random_state=np.random.default_rng(seed))
    return bench.evaluate([dict(ind.X) for ind in samples])


METHODS: dict[str, Callable[[Benchmark, int], np.ndarray]] = {
    "ours": run_ours,
    "pymoo": run_pymoo,
    "research": run_research,
    "random": run_random,
}


def benchmarks(quick: bool) -> list[Benchmark]:
    scale = 0.5 if quick else 1.0

    def gens(n: int) -> int:
        return max(5, int(n * scale))

    return [
        Benchmark("ZDT1", get_problem("zdt1"), False, 100, gens(100), np.array([1.1, 1.1])),
        Benchmark("ZDT2", get_problem("zdt2"), False, 100, gens(100), np.array([1.1, 1.1])),
        Benchmark("DTLZ2", get_problem("dtlz2", n_var=12, n_obj=3), False, 100, gens(100), np.full(3, 1.1)),
        Benchmark("KEYWORDS", KeywordsProblem(), True, 64, gens(60), np.full(3, 1.1)),
    ]


def quality_table(seeds: int, quick: bool) -> bool:
    print(
        f"Hypervolume of the non-dominated set of all evaluated points; median over {seeds} seeds [min, max]"
    )
    print(f"{'problem':<9} {'budget':>6} " + " ".join(f"{m:>22}" for m in METHODS) + "   ours/pymoo  targets")
    all_met = True
    for bench in benchmarks(quick):
        medians = {}
        cells = []
        for method, run in METHODS.items():
            values = [hypervolume_of(run(bench, seed), bench.reference) for seed in range(seeds)]
            medians[method] = statistics.median(values)
            cells.append(f"{medians[method]:.4f} [{min(values):.3f},{max(values):.3f}]")
        ratio = medians["ours"] / medians["pymoo"] if medians["pymoo"] else float("nan")
        met = (
            abs(ratio - 1) <= 0.02
            and medians["ours"] > medians["research"]
            and medians["ours"] > medians["random"]
        )
        all_met &= met
        print(
            f"{bench.name:<9} {bench.budget:>6} "
            + " ".join(f"{c:>22}" for c in cells)
            + f"   {ratio:10.4f}  {'met' if met else 'MISSED'}"
        )
    true_hv = hypervolume_of(KeywordsProblem.true_front(), np.full(3, 1.1))
    print(f"(KEYWORDS: hypervolume of the true front {true_hv:.4f})")
    return all_met


def _synthetic_result(candidate: Candidate) -> EvaluationResult:
    """Cheap stand-in metrics (the overhead benchmark times the engine, not the evaluation)."""
    settings = candidate.settings
    steps = settings.inference_steps or 28
    keywords = len(settings.positive_keywords) + len(settings.negative_keywords)
    metrics = Metrics(
        gender_bias=1.0 - len(settings.positive_keywords) / 25,
        ethnic_bias=abs((settings.guidance_scale or 7.0) - 9.0) / 20,
        quality=min(1.0, 0.3 + 0.005 * steps),
        energy_joules_per_image=2.0 * steps * (1 + 0.01 * keywords),
        seconds_per_image=0.05 * steps,
        gpu_joules=8.0 * steps,
        cpu_joules=2.0 * steps,
        images=4,
    )
    return EvaluationResult.succeeded(candidate.candidate_id, metrics)


def engine_overhead(generations: int = 20) -> list[float]:
    """Seconds of engine work per generation (ask + tell + hypervolume), evaluation excluded."""
    spec = SustainSearchSpec.model_validate(
        {
            "prompts": {"inline": ["p"]},
            "algorithm": {"populationSize": 64, "generations": generations, "seed": 1},
        }
    )
    engine = SearchEngine(spec)
    for candidate in engine.ask():  # the baseline generation
        engine.tell(_synthetic_result(candidate))
    timings = []
    while not engine.outcome().finished:
        started = time.perf_counter()
        batch = engine.ask()
        asked = time.perf_counter() - started
        results = [_synthetic_result(c) for c in batch]
        started = time.perf_counter()
        for result in results:
            engine.tell(result)  # the last tell runs NSGA-II survival and the hypervolume
        timings.append(asked + time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="half the generations")
    args = parser.parse_args()
    started = time.perf_counter()
    met = quality_table(args.seeds, args.quick)
    timings = engine_overhead()
    print(
        f"\nEngine overhead per generation at population 64, 45 keyword bits (ask + tell + hypervolume), "
        f"{len(timings)} generations: median {statistics.median(timings) * 1000:.1f} ms, "
        f"max {max(timings) * 1000:.1f} ms (target < 1000 ms)"
    )
    verdict = "all met" if met else "NOT all met"
    print(f"quality targets: {verdict}; wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
