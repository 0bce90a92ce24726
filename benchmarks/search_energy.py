"""What a search spends against what it finds, on a simulated model whose true values are known
(`benchmarks/simulator.py`): the real engine (NSGA-II, constraints, duplicates) runs the method's
setup; each arm is run over several seeds.

    .venv/bin/python benchmarks/search_energy.py [--seeds 10] [--population 20] [--generations 10]
                                                [--images 20]

Per arm it prints the mean over seeds of: evaluations and images generated, the simulated GPU+CPU
energy spent (kWh), how many evaluations generated images an earlier one already had (equivalent
settings), and the hypervolume of the returned front computed on the TRUE objective values
(normalised as the engine does: biases in [0, 1], energy by twice the defaults' true value).

Spaces: the method's (SD3 medium) and a few-step distilled model's, where guidance is mostly off.
Arms: `plain` identifies candidates by their settings as decoded (the identity of archives begun
before canonical ids); `canonical` by their canonical form (`CandidateSettings.canonical`).
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
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.objectives import MEASURED_SCALE_FACTOR, hypervolume

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class RunResult:
    evaluations: int
    images: int
    joules: float
    equivalent: int
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


def search_spec(space: str, seed: int, population: int, generations: int, images: int) -> SustainSearchSpec:
    return SustainSearchSpec.model_validate(
        {
            "prompts": {"inline": [METHOD_SEARCH_PROMPT], "imagesPerPrompt": images},
            "searchSpace": SPACES[space][1],
            "algorithm": {"populationSize": population, "generations": generations, "seed": seed},
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
    space: str, canonical: bool, seed: int, population: int, generations: int, images: int
) -> RunResult:
    spec = search_spec(space, seed, population, generations, images)
    model = SPACES[space][0]
    engine = SearchEngine(spec, canonical_ids=canonical)
    seen_images: set[str] = set()
    evaluations = generated = equivalent = 0
    joules = 0.0
    while not engine.outcome().finished:
        for candidate in engine.ask():
            result = simulate(candidate.candidate_id, candidate.settings, images, seed, model)
            engine.tell(result)
            evaluations += 1
            generated += images
            assert result.metrics is not None
            joules += result.metrics.energy_joules_per_image * images
            same_images = candidate.settings.canonical().candidate_id()
            equivalent += same_images in seen_images
            seen_images.add(same_images)
    front = [point.candidate.settings for point in engine.front()]
    return RunResult(evaluations, generated, joules, equivalent, true_front_hypervolume(front, model))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--images", type=int, default=20, help="images per candidate")
    arguments = parser.parse_args(argv)
    print(
        f"simulated searches: population {arguments.population}, {arguments.generations} generations, "
        f"{arguments.images} images per candidate, {arguments.seeds} seeds (means; hypervolume ± stdev)"
    )
    print(
        f"{'space':<10} {'arm':<10} {'evaluations':>11} {'images':>7} {'kWh':>8} {'equivalent':>10} "
        f"{'true HV':>15}"
    )
    for space in SPACES:
        for name, canonical in (("plain", False), ("canonical", True)):
            runs = [
                run_arm(space, canonical, seed, arguments.population, arguments.generations, arguments.images)
                for seed in range(arguments.seeds)
            ]
            hv = [r.true_hypervolume for r in runs]
            spread = statistics.stdev(hv) if len(hv) > 1 else 0.0
            print(
                f"{space:<10} {name:<10} {statistics.mean(r.evaluations for r in runs):>11.1f} "
                f"{statistics.mean(r.images for r in runs):>7.0f} "
                f"{statistics.mean(r.joules for r in runs) / JOULES_PER_KWH:>8.3f} "
                f"{statistics.mean(r.equivalent for r in runs):>10.1f} "
                f"{statistics.mean(hv):>8.4f} ± {spread:.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
