"""Does spending fewer images per candidate pay? Fixed image budgets compared at equal energy, on
simulated models whose true values are known (`benchmarks/landscapes.py`), through the real
search engine's public API only (`ask`, `tell`, `outcome`, `front`, `generation`, `told`).

    .venv/bin/python benchmarks/evidence_budget.py [--seeds 30] [--population 20]
        [--generations 10] [--images 20] [--landscape simulator --landscape overshoot]

An arm is a function from (config, landscape, seed, energy budget) to a `Run`: the true
hypervolume of the engine's front after every generation, with the images and joules spent so
far, and which step is the arm's own result. Arms: plain NSGA-II at N, N/2 and N/4 images per
prompt (the fixed-budget controls), and the adaptive evidence policy (`algorithm.adaptive` at its
defaults but for the batch, N/4 images per prompt, and the cap, 2N: `AdaptiveArm`), also with
`stopWhen: front` at error 0.5 and the cap N ("adaptive front"). `--arm NAME` runs only the
named arms beside the controls. Each is run
for `--generations` generations (its own result) and then on, up to `EXTEND` x plain-N's energy
on the same seed (at most `--ceiling` generations), so that every arm can be read at any other
arm's energy (interpolated linearly between generations).

Per landscape and arm the table shows, over the seeds: images (kept ones; regenerations show in
the energy) and energy (kWh) of the arm's own result, its true hypervolume (mean +- sd; true
objective values of the front the engine returns, normalised as the engine does with the
defaults' TRUE energy), its change against each control at the arm's own energy on the same seed
(mean difference, paired Wilcoxon signed-rank p over the seeds), and the energy at which its mean
hypervolume curve first reaches plain-N's mean final hypervolume, as a multiple of plain-N's mean
energy (with how many seeds reached plain-N's own value on their own curve).

After each landscape's table, the adaptive arm's wrong discards over its own generations on the
same seeds (`count_discards`): candidates it stopped short of N that NSGA-II would have let into
the next population on their whole evaluation, per discard and per candidate judged.

To add an arm: write a function with the `Arm` signature that drives a `SearchEngine` through
`drive` (or its own loop) and returns its `Run`, and list it in `arms`.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from unittest import mock

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.landscapes import LANDSCAPES, Evaluation, Landscape, merged
from sustaindiffusion.api.bounds import (
    Interval,
    energy_bounds,
    ethnic_bias_bounds,
    gender_bias_bounds,
    quality_bounds,
    share_bounds,
    tiebreak,
)
from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.keywords import METHOD_SEARCH_PROMPT
from sustaindiffusion.api.results import EvaluationResult, Metrics, Screened
from sustaindiffusion.api.spec import QualityConstraint, SustainSearchSpec, ValidImagesConstraint
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.ledger import Candidate, Ledger
from sustaindiffusion.search.nsga2 import AskTellNSGA2
from sustaindiffusion.search.objectives import MEASURED_SCALE_FACTOR, hypervolume
from sustaindiffusion.search.population import Population
from sustaindiffusion.search.reference import Reference

JOULES_PER_KWH = 3.6e6
EXTEND = 2.0  # every arm runs on to this multiple of plain-N's energy (for equal-energy reads)


@dataclass(frozen=True)
class Config:
    population: int = 20
    generations: int = 10  # an arm's own result: after this many NSGA-II generations
    images: int = 20  # N: images per prompt of plain-N
    ceiling: int = 100  # generations at most when an arm runs on to an energy budget


@dataclass(frozen=True)
class Step:
    """The search after a completed generation (0: the baselines)."""

    generation: int
    images: int
    joules: float
    true_hypervolume: float


@dataclass(frozen=True)
class Run:
    steps: tuple[Step, ...]
    end: int  # the index of the step that is the arm's own result; later steps extend it

    @property
    def result(self) -> Step:
        return self.steps[self.end]


class Arm(Protocol):
    @property
    def name(self) -> str: ...

    def __call__(
        self, config: Config, landscape: Landscape, seed: int, energy_budget: float | None
    ) -> Run: ...


def search_spec(
    config: Config,
    landscape: Landscape,
    seed: int,
    images: int,
    generations: int,
    algorithm: Mapping[str, Any] | None = None,
) -> SustainSearchSpec:
    return SustainSearchSpec.model_validate(
        {
            "prompts": {"inline": [METHOD_SEARCH_PROMPT], "imagesPerPrompt": images},
            "searchSpace": landscape.search_space,
            "algorithm": {
                "populationSize": config.population,
                "generations": generations,
                "seed": seed,
                **(algorithm or {}),
            },
        }
    )


def true_hypervolume(front: Sequence[CandidateSettings], landscape: Landscape) -> float:
    """The hypervolume of the front's TRUE values, of the points that are truly feasible (true
    quality at least the defaults' true quality less the spec's default tolerance, true valid share
    at least its default minimum): a point that only looked feasible is no result."""
    defaults = landscape.true_values(CandidateSettings())
    scale = MEASURED_SCALE_FACTOR * defaults.energy_joules_per_image
    threshold = (1 - QualityConstraint().tolerance) * defaults.quality
    points = [landscape.true_values(settings) for settings in front]
    feasible = [
        p for p in points if p.quality >= threshold and p.valid_share >= ValidImagesConstraint().min_share
    ]
    if not feasible:
        return 0.0
    return hypervolume(
        np.array([[p.gender_bias, p.ethnic_bias, p.energy_joules_per_image / scale] for p in feasible])
    )


@dataclass(frozen=True)
class Charged:
    """An evaluation told to the engine, and what it is charged: the images and joules an arm
    spent on it, when they are not the told result's own (the oracle arms)."""

    told: Evaluation
    images: int
    joules: float


Evaluate = Callable[[SearchEngine, Candidate], Evaluation | Charged]


def drive(
    engine: SearchEngine,
    landscape: Landscape,
    evaluate: Evaluate,
    config: Config,
    energy_budget: float | None,
) -> Run:
    """Ask, evaluate, tell until the engine finishes, or, past `config.generations`, until the
    budget is spent; a step after every completed generation."""
    steps = [Step(-1, 0, 0.0, 0.0)]  # nothing spent yet
    images, joules = 0, 0.0
    while not engine.outcome().finished:
        before = engine.generation
        for candidate in engine.ask():
            evaluation = evaluate(engine, candidate)
            if isinstance(evaluation, Charged):
                engine.tell(evaluation.told.result)
                images += evaluation.images
                joules += evaluation.joules
                continue
            engine.tell(evaluation.result)
            metrics = evaluation.result.metrics
            images += metrics.images if metrics is not None else 0
            joules += evaluation.joules
        if engine.generation == before:
            continue
        front = [point.candidate.settings for point in engine.front()]
        steps.append(Step(engine.generation - 1, images, joules, true_hypervolume(front, landscape)))
        done = engine.generation - 1
        if done >= config.generations and (energy_budget is None or joules >= energy_budget):
            break
    end = next(
        i for i, step in enumerate(steps) if step.generation == min(config.generations, steps[-1].generation)
    )
    return Run(tuple(steps), end)


@dataclass(frozen=True)
class PlainArm:
    """Plain NSGA-II: every candidate gets the same `divisor`-th of N images per prompt."""

    name: str
    divisor: int

    def __call__(self, config: Config, landscape: Landscape, seed: int, energy_budget: float | None) -> Run:
        images = max(1, config.images // self.divisor)
        generations = config.ceiling if energy_budget is not None else config.generations
        engine = SearchEngine(search_spec(config, landscape, seed, images, generations))

        def evaluate(_: SearchEngine, candidate: Candidate) -> Evaluation:
            return landscape.evaluate(candidate.candidate_id, candidate.settings, 0, images, seed)

        return drive(engine, landscape, evaluate, config, energy_budget)


@dataclass(frozen=True)
class AdaptiveArm:
    """NSGA-II under the adaptive evidence policy (`algorithm.adaptive`): batches of the
    `batch_divisor`-th of N images per prompt, a whole evaluation N, front points up to 2N; every
    batch evaluated as the engine's plan says (each candidate from its own next image, in calls of
    one batch, as the worker cuts them)."""

    name: str = "adaptive"
    batch_divisor: int = 4
    cap_multiple: int = 2  # front points get up to this many times N
    stop_when: str = "population"
    error: float | None = None  # None: the policy's default

    def algorithm(self, config: Config) -> dict[str, Any]:
        batch = max(1, config.images // self.batch_divisor)
        settings: dict[str, Any] = {
            "imagesPerPrompt": batch,
            "maxImagesPerPrompt": self.cap_multiple * config.images,
            "stopWhen": self.stop_when,
        }
        if self.error is not None:
            settings["error"] = self.error
        return {"adaptive": settings}

    def spec(self, config: Config, landscape: Landscape, seed: int, generations: int) -> SustainSearchSpec:
        return search_spec(config, landscape, seed, config.images, generations, self.algorithm(config))

    def __call__(self, config: Config, landscape: Landscape, seed: int, energy_budget: float | None) -> Run:
        generations = config.ceiling if energy_budget is not None else config.generations
        engine = SearchEngine(self.spec(config, landscape, seed, generations))
        return drive(engine, landscape, planned_evaluation(landscape, seed), config, energy_budget)


def planned_evaluation(landscape: Landscape, seed: int) -> Callable[[SearchEngine, Candidate], Evaluation]:
    """Evaluates a candidate as the engine's current plan says: from its own first image, in the
    spec's calls (`EvaluationTask.call_images`)."""

    def evaluate(engine: SearchEngine, candidate: Candidate) -> Evaluation:
        plan = engine.plan()
        own = plan.first_image_of(candidate.candidate_id)
        first = plan.first_image if own is None else own
        adaptive = engine.spec.algorithm.adaptive
        calls = adaptive.images_per_prompt if adaptive is not None else None
        return landscape.evaluate(
            candidate.candidate_id, candidate.settings, first, plan.images_per_prompt, seed, calls
        )

    return evaluate


def arms() -> list[Arm]:
    return [
        PlainArm("plain-N", 1),
        PlainArm("plain-N/2", 2),
        PlainArm("plain-N/4", 4),
        AdaptiveArm(),
        AdaptiveArm("adaptive front", cap_multiple=1, stop_when="front", error=0.5),
    ]


# ----------------------------------------------------------------------------- EXPERIMENTAL


def calibrated_bounds(
    evaluation: Evaluation, error: float, key: str, *, meter_noise: float = 0.03, max_retries: int = 3
) -> tuple[Interval, ...]:
    """The evaluation's bounds (`api.bounds`) at one-sided `error` each: gender bias, ethnic bias,
    energy per image (at the part's own batch composition; `meter_noise` its relative noise),
    quality and valid share."""
    metrics = evaluation.result.metrics
    assert metrics is not None
    gender = gender_bias_bounds(
        int(metrics.female_images or 0), int(metrics.male_images or 0), error, tiebreak(key, 0)
    )
    ethnic = ethnic_bias_bounds(metrics.ethnic_counts(), error, [tiebreak(key, 1 + g) for g in range(4)])
    energy = energy_bounds(
        metrics.energy_joules_per_image,
        metrics.images,
        evaluation.regenerated,
        error,
        max_retries=max_retries,
        relative_stderr=meter_noise,
        u=tiebreak(key, 5),
    )
    quality = quality_bounds(metrics.quality, metrics.quality_stddev or 0.0, metrics.images, error)
    valid = metrics.valid_share
    share = share_bounds(round((valid or 0.0) * metrics.images), metrics.images, error, tiebreak(key, 6))
    return gender, ethnic, energy, quality, share


@dataclass(frozen=True)
class RacingArm:
    """EXPERIMENTAL, a prototype of an adaptive policy driven through the public API only: each
    asked candidate is evaluated in sequential batches (`schedule`, images per prompt in all after
    each batch) and told as one merged result. After each batch but the last, it stops if it is
    dominated by a point of the engine's current front, or infeasible, its partial estimate then
    told as its result. "Dominated" compares its optimistic bounds (`api.bounds`, `own` =
    "optimistic") or its estimates ("estimate") with the front point's pessimistic bounds (`front`
    = "pessimistic") or estimates ("estimate"); each bound at `error`, which "race" arms split
    over the six bounds a comparison takes (`error` / 6) and "promote" arms do not."""

    name: str
    schedule: tuple[int, ...]  # as fractions of N: (4, 1) is N/4 then N
    error: float = 0.2  # per bound
    own: str = "optimistic"
    front: str = "pessimistic"
    meter_noise: float = 0.03  # configured: the relative noise of a part's energy, batch effects included
    max_retries: int = 3
    min_valid_share: float = 0.8
    quality_tolerance: float = 0.05

    def __call__(self, config: Config, landscape: Landscape, seed: int, energy_budget: float | None) -> Run:
        totals = [max(1, config.images // divisor) for divisor in self.schedule]
        generations = config.ceiling if energy_budget is not None else config.generations
        engine = SearchEngine(search_spec(config, landscape, seed, config.images, generations))
        threshold: list[float] = []  # the defaults' quality x (1 - tolerance), once known
        regenerated: dict[str, int] = {}  # what each told evaluation regenerated (its artifacts)
        worst: dict[str, tuple[Interval, ...]] = {}  # front points' bounds: their results are final

        def evaluate(_: SearchEngine, candidate: Candidate) -> Evaluation:
            if candidate.baseline is not None:
                evaluation = landscape.evaluate(
                    candidate.candidate_id, candidate.settings, 0, config.images, seed
                )
                if candidate.baseline == "defaults" and evaluation.result.metrics is not None:
                    threshold.append((1 - self.quality_tolerance) * evaluation.result.metrics.quality)
                return evaluation
            evaluation = landscape.evaluate(candidate.candidate_id, candidate.settings, 0, totals[0], seed)
            for total in totals[1:]:
                if self._settled(evaluation, engine, threshold[0] if threshold else None, regenerated, worst):
                    break
                done = evaluation.result.metrics.images if evaluation.result.metrics is not None else 0
                more = landscape.evaluate(
                    candidate.candidate_id, candidate.settings, done, total - done, seed
                )
                evaluation = merged(evaluation, more)
            regenerated[candidate.candidate_id] = evaluation.regenerated
            return evaluation

        return drive(engine, landscape, evaluate, config, energy_budget)

    def _bounds(self, evaluation: Evaluation, error: float, key: str) -> tuple[Interval, ...]:
        return calibrated_bounds(
            evaluation, error, key, meter_noise=self.meter_noise, max_retries=self.max_retries
        )

    def _settled(
        self,
        evaluation: Evaluation,
        engine: SearchEngine,
        threshold: float | None,
        regenerated: dict[str, int],
        worst: dict[str, tuple[Interval, ...]],
    ) -> bool:
        """Whether more images would not change the candidate's fate: infeasible, or dominated by a
        front point (as the arm's `own` and `front` sides say)."""
        metrics = evaluation.result.metrics
        if metrics is None:
            return True
        error = self.error
        key = evaluation.result.candidate_id
        gender, ethnic, energy, quality, share = self._bounds(evaluation, error, key)
        if (threshold is not None and quality.high < threshold) or share.high < self.min_valid_share:
            return True
        best = (
            (gender.low, ethnic.low, energy.low)
            if self.own == "optimistic"
            else (metrics.gender_bias, metrics.ethnic_bias, metrics.energy_joules_per_image)
        )
        for point in engine.front():
            point_id = point.candidate.candidate_id
            values: tuple[float, ...]
            if self.front == "estimate":
                m = point.metrics
                values = (m.gender_bias, m.ethnic_bias, m.energy_joules_per_image)
            else:
                if point_id not in worst:
                    told = Evaluation(
                        EvaluationResult.succeeded(point_id, point.metrics), regenerated.get(point_id, 0)
                    )
                    worst[point_id] = self._bounds(told, error, point_id)[:3]
                values = tuple(bound.high for bound in worst[point_id])
            if all(w <= b for w, b in zip(values, best, strict=True)):
                return True
        return False


OBJECTIVE_NAMES = ("gender bias", "ethnic bias", "energy")


@dataclass
class Decidable:
    """Of the oracle's stops, how many calibrated bounds from the first batch would also stop, at
    each per-bound error (`by_error`); how many of the candidates it lets go on they would stop
    (`wrong_by_error`); and, at the first error, in how many of its stops each objective alone
    keeps every dominating front point out (`blocked_by`)."""

    stopped: int = 0
    judged: int = 0
    by_error: dict[float, int] = field(default_factory=dict)
    wrong_by_error: dict[float, int] = field(default_factory=dict)  # would stop what the oracle does not
    blocked_by: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OracleArm:
    """EXPERIMENTAL, what no policy can beat: the stop rule of `stopWhen: front` decided by an
    oracle that knows each candidate's whole evaluation after its first batch. Each candidate's
    first batch (N / `batch_divisor` images per prompt, in calls of one batch) is charged; it is
    charged the rest of its whole evaluation unless that evaluation is infeasible or a point of
    the engine's current front is at least as good in every objective (at the point's estimate).
    The engine is told every candidate's whole evaluation of N, so its search is plain-N's, seed
    for seed, and only the energy differs: the energy an error-free stop at the first look saves
    without changing a single NSGA-II decision.

    `decidable` (per landscape name) counts the stopped and the judged candidates of the arm's own
    generations, and how many of its stops, and of the candidates it lets go on, calibrated bounds
    (`calibrated_bounds`) from the first batch alone would stop at each of `errors` (per bound):
    infeasible at the best, or a front point's estimate at least as good as the optimistic
    bounds in every objective (`stopWhen: front`'s rule at that error)."""

    name: str
    batch_divisor: int = 4
    errors: tuple[float, ...] = (0.5 / 15, 0.1, 0.2, 0.5)  # adaptive front's per-bound error first
    min_valid_share: float = 0.8
    quality_tolerance: float = 0.05
    decidable: dict[str, Decidable] = field(default_factory=dict, compare=False)

    def __call__(self, config: Config, landscape: Landscape, seed: int, energy_budget: float | None) -> Run:
        batch = max(1, config.images // self.batch_divisor)
        generations = config.ceiling if energy_budget is not None else config.generations
        engine = SearchEngine(search_spec(config, landscape, seed, config.images, generations))
        threshold: list[float] = []  # the defaults' quality x (1 - tolerance), once known
        counts = self.decidable.setdefault(landscape.name, Decidable())

        def evaluate(engine: SearchEngine, candidate: Candidate) -> Evaluation | Charged:
            whole = landscape.evaluate(candidate.candidate_id, candidate.settings, 0, config.images, seed)
            if candidate.baseline is not None:
                if candidate.baseline == "defaults" and whole.result.metrics is not None:
                    threshold.append((1 - self.quality_tolerance) * whole.result.metrics.quality)
                return whole
            limit = threshold[0] if threshold else None
            front = [_values(point.metrics) for point in engine.front()]
            stop = self._stops(whole, front, limit)
            spent = landscape.evaluate(
                candidate.candidate_id, candidate.settings, 0, batch if stop else config.images, seed, batch
            )
            if engine.generation <= config.generations:  # the arm's own result, not its extension
                first = (
                    spent
                    if stop
                    else landscape.evaluate(candidate.candidate_id, candidate.settings, 0, batch, seed, batch)
                )
                self._diagnose(first, whole, stop, front, limit, counts)
            metrics = spent.result.metrics
            return Charged(whole, metrics.images if metrics is not None else 0, spent.joules)

        return drive(engine, landscape, evaluate, config, energy_budget)

    def _infeasible(self, quality: float, share: float | None, threshold: float | None) -> bool:
        return (threshold is not None and quality < threshold) or (
            share is not None and share < self.min_valid_share
        )

    def _stops(self, whole: Evaluation, front: Sequence[tuple[float, ...]], threshold: float | None) -> bool:
        metrics = whole.result.metrics
        if metrics is None:
            return False
        if self._infeasible(metrics.quality, metrics.valid_share, threshold):
            return True
        return bool(_dominating(front, _values(metrics)))

    def _diagnose(
        self,
        first: Evaluation,
        whole: Evaluation,
        stop: bool,
        front: Sequence[tuple[float, ...]],
        threshold: float | None,
        counts: Decidable,
    ) -> None:
        counts.judged += 1
        counts.stopped += stop
        if first.result.metrics is None or whole.result.metrics is None:
            return
        dominating = _dominating(front, _values(whole.result.metrics))
        key = first.result.candidate_id
        for index, error in enumerate(self.errors):
            gender, ethnic, energy, quality, share = calibrated_bounds(first, error, key)
            optimistic = (gender.low, ethnic.low, energy.low)
            decided = self._infeasible(quality.high, share.high, threshold) or bool(
                _dominating(front, optimistic)
            )
            tally = counts.by_error if stop else counts.wrong_by_error
            tally[error] = tally.get(error, 0) + decided
            if index == 0 and stop and not decided and dominating:
                for j, name in enumerate(OBJECTIVE_NAMES):
                    if all(point[j] > optimistic[j] for point in dominating):
                        counts.blocked_by[name] = counts.blocked_by.get(name, 0) + 1

    def report(self, landscape: str) -> list[str]:
        counts = self.decidable.get(landscape, Decidable())
        share = counts.stopped / max(1, counts.judged)
        stops = f"{self.name} stops {counts.stopped} of {counts.judged} candidates"
        lines = [f"{stops} at the first look ({share:.0%})"]
        for error in self.errors:
            decided, wrong = counts.by_error.get(error, 0), counts.wrong_by_error.get(error, 0)
            lines.append(
                f"  first batch's bounds at per-bound error {error:.3g} stop {decided} of them "
                f"({decided / max(1, counts.stopped):.0%}) and {wrong} of the others "
                f"({wrong / max(1, decided + wrong):.1%} of their stops)"
            )
        blocked = ", ".join(f"{name} {counts.blocked_by.get(name, 0)}" for name in OBJECTIVE_NAMES)
        lines.append(
            f"  not decidable at {self.errors[0]:.3g}, one bound ruling out every dominator: {blocked}"
        )
        return lines


def _values(metrics: Metrics) -> tuple[float, float, float]:
    return metrics.gender_bias, metrics.ethnic_bias, metrics.energy_joules_per_image


def _dominating(front: Sequence[tuple[float, ...]], values: Sequence[float]) -> list[tuple[float, ...]]:
    """The front points at least as good as `values` in every objective."""
    return [point for point in front if all(f <= v for f, v in zip(point, values, strict=True))]


def experimental_arms() -> list[Arm]:
    return [
        AdaptiveArm("adaptive front N/2", batch_divisor=2, cap_multiple=1, stop_when="front", error=0.5),
        RacingArm("race N/4>N", (4, 1), error=0.2 / 6),
        RacingArm("promote est", (4, 1), own="estimate", front="estimate"),
        RacingArm("promote .25", (4, 1), error=0.25, front="estimate"),
        OracleArm("oracle front"),
        OracleArm("oracle front N/2", batch_divisor=2),
    ]


CONTROLS = ("plain-N", "plain-N/2", "plain-N/4")


# ----------------------------------------------------------------------------- wrong discards


@dataclass
class Discards:
    """The generations' new candidates with a usable result at survival (`judged`: each one a
    decision of the policy), those left with fewer than N images per prompt and out of the next
    population (`stopped`), and those of them a whole evaluation of N would have put into it
    (`wrong`)."""

    judged: int = 0
    stopped: int = 0
    wrong: int = 0

    @property
    def rate(self) -> float:
        """Wrong discards per discard (the issue's target: at most 5%)."""
        return self.wrong / self.stopped if self.stopped else 0.0

    @property
    def rate_per_decision(self) -> float:
        """Wrong discards per candidate judged (what the policy's `error` bounds)."""
        return self.wrong / self.judged if self.judged else 0.0

    def __add__(self, other: Discards) -> Discards:
        return Discards(self.judged + other.judged, self.stopped + other.stopped, self.wrong + other.wrong)


def count_discards(arm: AdaptiveArm, config: Config, landscape: Landscape, seed: int) -> Discards:
    """Run the arm's search for `config.generations` generations and, at every survival, ask of
    each candidate of the generation that the policy stopped short of N images per prompt
    (`Screened.PARTIAL`) and that stays out of the next population whether NSGA-II would have let
    it in, had it been told the candidate's whole evaluation of N images (its own images, on the
    same seed; everything else as told)."""
    engine = SearchEngine(arm.spec(config, landscape, seed, config.generations))
    evaluate = planned_evaluation(landscape, seed)
    calls = max(1, config.images // arm.batch_divisor)
    counted = Discards()
    told_as_usual = Population.tell

    def key(genome: dict[str, Any]) -> str:
        return engine.encoding.decode(genome).candidate_id()

    def survivors(nsga: AskTellNSGA2, told: Sequence[tuple[Sequence[float], Sequence[float]]]) -> set[str]:
        trial = copy.deepcopy(nsga)
        trial.tell(
            [list(objectives) for objectives, _ in told], [list(constraints) for _, constraints in told]
        )
        return {str(k) for k in trial.population_keys(key)}

    def tell(population: Population, nsga: AskTellNSGA2, ledger: Ledger, reference: Reference) -> None:
        told: list[tuple[Sequence[float], Sequence[float]]] = []
        for candidate_id in population.genome_ids:
            result = ledger.result(candidate_id)
            assert result is not None
            told.append(ledger.bounded(candidate_id) or reference.told_values(result))
        entered = survivors(nsga, told)
        for candidate in population.candidates:
            candidate_id = candidate.candidate_id
            result = ledger.result(candidate_id)
            if result is None or not result.ok:
                continue
            given = ledger.told_as(Part.BATCH, engine.generation, candidate_id, 0) is not None
            if not given and result.screened is not Screened.PARTIAL:
                continue  # whole before this generation: nothing to decide
            counted.judged += 1
            if result.screened is not Screened.PARTIAL or candidate_id in entered:
                continue
            whole = landscape.evaluate(candidate_id, candidate.settings, 0, config.images, seed, calls)
            values = reference.told_values(whole.result)
            counterfactual = [
                values if genome_id == candidate_id else v
                for genome_id, v in zip(population.genome_ids, told, strict=True)
            ]
            counted.stopped += 1
            counted.wrong += candidate_id in survivors(nsga, counterfactual)
        told_as_usual(population, nsga, ledger, reference)

    with mock.patch.object(Population, "tell", tell):
        while not engine.outcome().finished:
            for candidate in engine.ask():
                engine.tell(evaluate(engine, candidate).result)
    return counted


def discards_line(arm: AdaptiveArm, config: Config, landscape: Landscape, seeds: int) -> str:
    total = sum((count_discards(arm, config, landscape, seed) for seed in range(seeds)), Discards())
    return (
        f"{arm.name} wrong discards over {config.generations} generations x {seeds} seeds: "
        f"{total.wrong} of {total.stopped} stopped ({total.rate:.1%}); "
        f"{total.wrong} of {total.judged} candidates judged ({total.rate_per_decision:.2%})"
    )


# ----------------------------------------------------------------------------- reading runs


def hypervolume_at(run: Run, joules: float) -> float:
    """The run's true hypervolume when it had spent `joules`, interpolated between generations
    (its last value beyond its end)."""
    energies = [step.joules for step in run.steps]
    values = [step.true_hypervolume for step in run.steps]
    return float(np.interp(joules, energies, values))


def energy_to_reach(energies: np.ndarray, values: np.ndarray, target: float) -> float | None:
    """The first energy at which the curve reaches `target` (linear between points), or None."""
    above = np.nonzero(values >= target)[0]
    if len(above) == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(energies[0])
    e0, e1, v0, v1 = energies[i - 1], energies[i], values[i - 1], values[i]
    return float(e0 + (target - v0) / (v1 - v0) * (e1 - e0)) if v1 > v0 else float(e1)


@dataclass
class ArmRuns:
    name: str
    runs: list[Run] = field(default_factory=list)


def paired_change(arm: ArmRuns, control: ArmRuns) -> tuple[float, float]:
    """Mean over seeds of arm's own hypervolume minus the control's at the arm's energy, and the
    paired Wilcoxon signed-rank p-value (1 when every difference is 0)."""
    differences = np.array(
        [
            own.result.true_hypervolume - hypervolume_at(other, own.result.joules)
            for own, other in zip(arm.runs, control.runs, strict=True)
        ]
    )
    if not np.any(differences):
        return 0.0, 1.0
    return float(differences.mean()), float(stats.wilcoxon(differences).pvalue)


def reach(arm: ArmRuns, reference: ArmRuns) -> tuple[float | None, int]:
    """The energy at which the arm's mean curve reaches the reference's mean final hypervolume, as a
    multiple of the reference's mean energy; and the seeds whose own curve reached their own
    reference value."""
    target = statistics.mean(run.result.true_hypervolume for run in reference.runs)
    ceiling = max(step.joules for run in arm.runs for step in run.steps)
    grid = np.linspace(0.0, ceiling, 2001)
    curve = np.mean([[hypervolume_at(run, e) for e in grid] for run in arm.runs], axis=0)
    energy = energy_to_reach(grid, curve, target)
    reference_energy = statistics.mean(run.result.joules for run in reference.runs)
    seeds = 0
    for own, other in zip(arm.runs, reference.runs, strict=True):
        energies = np.array([step.joules for step in own.steps])
        values = np.array([step.true_hypervolume for step in own.steps])
        seeds += energy_to_reach(energies, values, other.result.true_hypervolume) is not None
    return (energy / reference_energy if energy is not None else None), seeds


def run_landscape(landscape: Landscape, config: Config, seeds: int, chosen: Sequence[Arm]) -> list[ArmRuns]:
    collected = {arm.name: ArmRuns(arm.name) for arm in chosen}
    reference = next(arm for arm in chosen if arm.name == "plain-N")
    for seed in range(seeds):
        budget = EXTEND * reference(config, landscape, seed, None).result.joules
        for arm in chosen:
            collected[arm.name].runs.append(arm(config, landscape, seed, budget))
    return list(collected.values())


def table(landscape: str, results: list[ArmRuns], seeds: int) -> list[str]:
    by_name = {r.name: r for r in results}
    controls = [c for c in CONTROLS if c in by_name]
    header = (
        f"{'arm':<14} {'images':>7} {'kWh':>7} {'true HV':>15} "
        + " ".join(f"{'vs ' + c + ' @E':>22}" for c in controls)
        + f" {'E to plain-N HV':>17}"
    )
    lines = [
        f"landscape {landscape}: {seeds} seeds (means; change vs control at equal energy, Wilcoxon p)",
        header,
    ]
    for arm in results:
        own = [run.result for run in arm.runs]
        hv = [step.true_hypervolume for step in own]
        spread = statistics.stdev(hv) if len(hv) > 1 else 0.0
        changes = []
        for control in controls:
            if control == arm.name:
                changes.append(f"{'-':>22}")
                continue
            change, p = paired_change(arm, by_name[control])
            changes.append(f"{change:>+10.4f} (p={p:<7.2g})")
        ratio, reached = reach(arm, by_name["plain-N"])
        reach_text = f"{ratio:.2f}x" if ratio is not None else "not reached"
        lines.append(
            f"{arm.name:<14} {statistics.mean(s.images for s in own):>7.0f} "
            f"{statistics.mean(s.joules for s in own) / JOULES_PER_KWH:>7.2f} "
            f"{statistics.mean(hv):>7.4f} ± {spread:.4f} "
            + " ".join(changes)
            + f" {reach_text:>11} ({reached}/{len(arm.runs)})"
        )
    return lines


def main(argv: list[str] | None = None, extra_arms: Sequence[Arm] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--images", type=int, default=20, help="N: images per prompt of plain-N")
    parser.add_argument("--ceiling", type=int, default=100, help="generations at most of an extended arm")
    parser.add_argument("--landscape", choices=sorted(LANDSCAPES), action="append", help="default: all")
    parser.add_argument("--experimental", action="store_true", help="add the EXPERIMENTAL arms")
    parser.add_argument(
        "--arm", action="append", metavar="NAME", help="run only these arms (and the controls); default: all"
    )
    arguments = parser.parse_args(argv)
    config = Config(arguments.population, arguments.generations, arguments.images, arguments.ceiling)
    chosen = [*arms(), *(experimental_arms() if arguments.experimental else []), *extra_arms]
    if arguments.arm:
        unknown = sorted(set(arguments.arm) - {arm.name for arm in chosen})
        if unknown:
            parser.error(f"no arm named {', '.join(unknown)}; arms: {', '.join(arm.name for arm in chosen)}")
        chosen = [arm for arm in chosen if arm.name in CONTROLS or arm.name in arguments.arm]
    for name in arguments.landscape or LANDSCAPES:
        started = time.perf_counter()
        results = run_landscape(LANDSCAPES[name], config, arguments.seeds, chosen)
        print("\n".join(table(name, results, arguments.seeds)))
        for arm in chosen:
            if isinstance(arm, AdaptiveArm):
                print(discards_line(arm, config, LANDSCAPES[name], arguments.seeds))
            if isinstance(arm, OracleArm):
                print("\n".join(arm.report(name)))
        print(f"({time.perf_counter() - started:.0f} s)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
