"""What a search spends against what it finds, on a simulated model whose true values are known
(`benchmarks/simulator.py`): the real engine (NSGA-II, constraints, duplicates) runs the method's
setup; each arm is run over several seeds.

    .venv/bin/python benchmarks/search_energy.py [--seeds 30] [--population 20] [--generations 10]
                                                [--images 20] [--space method]

Per arm it prints the mean over seeds of: evaluations and images generated, the simulated GPU+CPU
energy spent (kWh), how many evaluations generated images an earlier one already had (equivalent
settings), and the hypervolume of the returned front computed on the TRUE objective values
(normalised as the engine does: biases in [0, 1], energy by twice the defaults' true value).

Spaces: the method's (SD3 medium) and a few-step distilled model's, where guidance is mostly off.
Arms: `plain` identifies candidates by their settings as decoded (the identity of archives begun
before canonical ids); `canonical` by their canonical form (`CandidateSettings.canonical`);
`screen-k` adds multi-fidelity screening (`algorithm.screening.imagesPerPrompt: k`: k images
first, the rest for candidates that could still enter the next population; bounds at the default
confidence 0.8, `@.95` at 0.95); `=E` runs more generations (up to 100) until it has spent what
`plain` spent on the same seed; `evidence` gives 5 front points 10 more images per generation (up
to 60), `+ev` the same on top of screening. The
"screened" column counts the candidates screened out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.simulator import DISTILLED, SD3_MEDIUM, Model, simulate, true_values
from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.keywords import METHOD_SEARCH_PROMPT
from sustaindiffusion.api.results import Screened
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.objectives import MEASURED_SCALE_FACTOR, hypervolume

JOULES_PER_KWH = 3.6e6
EQUAL_ENERGY_CEILING = 100  # generations at most of an arm stopped by an energy budget


@dataclass(frozen=True)
class RunResult:
    evaluations: int
    images: int
    joules: float
    equivalent: int
    screened_out: int
    true_hypervolume: float


SPACES: dict[str, tuple[Model, dict[str, Any]]] = {
    # The method's space on SD3 medium: guidance <= 1 (no classifier-free guidance) is 5% of it.
    "method": (
        SD3_MEDIUM,
        {
            "inferenceSteps": {"min": 25, "max": 80},
            "guidanceScale": {"min": 0.0, "max": 20.0, "step": 0.1},
            "promptWeight": {"min": 0, "max": 5},
        },
    ),
    # A few-step distilled model's space (turbo-like: guidance 0 to 1.5, mostly without guidance).
    "distilled": (
        DISTILLED,
        {
            "inferenceSteps": {"min": 2, "max": 8},
            "guidanceScale": {"min": 0.0, "max": 1.5, "step": 0.5},
            "promptWeight": {"min": 0, "max": 5},
        },
    ),
}


@dataclass(frozen=True)
class Arm:
    name: str
    canonical: bool = True
    screening: int | None = None  # images of the screening pass (of the candidate's `images`)
    confidence: float = 0.8  # of the screening's optimistic bounds (the spec's default)
    evidence: bool = False  # 5 front points get 10 more images per generation, up to 60
    equal_energy: bool = False  # more generations, stopped by plain NSGA-II's energy as the budget


ARMS = (
    Arm("plain", canonical=False),
    Arm("canonical"),
    Arm("screen-5@.95", screening=5, confidence=0.95),
    Arm("screen-5", screening=5),
    Arm("screen-2", screening=2),
    Arm("screen-2=E", screening=2, equal_energy=True),
    Arm("evidence", evidence=True),
    Arm("screen-2+ev", screening=2, evidence=True),
)


def search_spec(
    space: str,
    seed: int,
    population: int,
    generations: int,
    images: int,
    screening: int | None = None,
    energy_budget: float | None = None,
    confidence: float = 0.95,
    evidence: bool = False,
) -> SustainSearchSpec:
    algorithm: dict[str, Any] = {"populationSize": population, "generations": generations, "seed": seed}
    if screening is not None:
        algorithm["screening"] = {"imagesPerPrompt": screening, "confidence": confidence}
    if energy_budget is not None:
        algorithm["termination"] = {"energyBudgetJoules": energy_budget}
    if evidence:
        algorithm["evidence"] = {
            "imagesPerPrompt": images // 2,
            "maxImagesPerPrompt": 3 * images,
            "points": 5,
        }
    return SustainSearchSpec.model_validate(
        {
            "prompts": {"inline": [METHOD_SEARCH_PROMPT], "imagesPerPrompt": images},
            "searchSpace": SPACES[space][1],
            "algorithm": algorithm,
        }
    )


def true_front_hypervolume(front: list[CandidateSettings], model: Model) -> float:
    defaults = true_values(CandidateSettings(), model).energy_joules_per_image
    points = [true_values(settings, model) for settings in front]
    normalised = np.array(
        [
            [p.gender_bias, p.ethnic_bias, p.energy_joules_per_image / (MEASURED_SCALE_FACTOR * defaults)]
            for p in points
        ]
    )
    return hypervolume(normalised)


def run_arm(
    space: str,
    arm: Arm,
    seed: int,
    population: int,
    generations: int,
    images: int,
    energy_budget: float | None = None,
) -> RunResult:
    """One search of the arm; `energy_budget` (joules) with `generations` as a ceiling, for arms
    compared at equal energy."""
    spec = search_spec(
        space,
        seed,
        population,
        generations,
        images,
        arm.screening,
        energy_budget,
        arm.confidence,
        arm.evidence,
    )
    model = SPACES[space][0]
    engine = SearchEngine(spec, canonical_ids=arm.canonical)
    seen_images: set[str] = set()
    evaluations = generated = equivalent = screened_out = 0
    joules = 0.0
    while not engine.outcome().finished:
        plan = engine.plan()
        count = plan.images_per_prompt
        asked = plan.part in (Part.WHOLE, Part.SCREEN)  # a candidate's first evaluation
        for candidate in engine.ask():
            own = plan.first_image_of(candidate.candidate_id)  # more evidence: its own next images
            start = own if own is not None else plan.first_image
            result = simulate(candidate.candidate_id, candidate.settings, count, seed, model, start)
            engine.tell(result)
            generated += count
            assert result.metrics is not None
            joules += result.metrics.energy_joules_per_image * count
            if asked:
                evaluations += 1
                same_images = candidate.settings.canonical().candidate_id()
                equivalent += same_images in seen_images
                seen_images.add(same_images)
    screened_out = sum(1 for r in engine.told if r.screened is Screened.OUT)
    front = [point.candidate.settings for point in engine.front()]
    return RunResult(
        evaluations, generated, joules, equivalent, screened_out, true_front_hypervolume(front, model)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--images", type=int, default=20, help="images per candidate")
    parser.add_argument("--space", choices=sorted(SPACES), action="append", help="default: all")
    arguments = parser.parse_args(argv)
    population, generations, images = arguments.population, arguments.generations, arguments.images
    print(
        f"simulated searches: population {population}, {generations} generations, "
        f"{images} images per candidate, {arguments.seeds} seeds (means; hypervolume ± stdev)"
    )
    print(
        f"{'space':<10} {'arm':<15} {'evaluations':>11} {'images':>7} {'kWh':>8} {'equivalent':>10} "
        f"{'screened':>8} {'true HV':>15}"
    )
    for space in arguments.space or SPACES:
        plain_joules: dict[int, float] = {}
        for arm in ARMS:
            runs = []
            for seed in range(arguments.seeds):
                if arm.equal_energy:
                    budget = plain_joules[seed]
                    run = run_arm(space, arm, seed, population, EQUAL_ENERGY_CEILING, images, budget)
                else:
                    run = run_arm(space, arm, seed, population, generations, images)
                if arm.name == "plain":
                    plain_joules[seed] = run.joules
                runs.append(run)
            hv = [r.true_hypervolume for r in runs]
            spread = statistics.stdev(hv) if len(hv) > 1 else 0.0
            print(
                f"{space:<10} {arm.name:<15} {statistics.mean(r.evaluations for r in runs):>11.1f} "
                f"{statistics.mean(r.images for r in runs):>7.0f} "
                f"{statistics.mean(r.joules for r in runs) / JOULES_PER_KWH:>8.3f} "
                f"{statistics.mean(r.equivalent for r in runs):>10.1f} "
                f"{statistics.mean(r.screened_out for r in runs):>8.1f} "
                f"{statistics.mean(hv):>8.4f} ± {spread:.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
