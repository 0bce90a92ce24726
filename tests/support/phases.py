"""Phases in isolation: the context of a generation built the way the engine builds it (baselines
told, the reference fixed, NSGA-II asked), without an engine, and results for a phase's plan from
the benchmark's simulated model (its images are drawn one by one, so parts add up)."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.simulator import simulate
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.encoding import SearchSpaceEncoding
from sustaindiffusion.search.ledger import Candidate, Ledger
from sustaindiffusion.search.nsga2 import AskTellNSGA2
from sustaindiffusion.search.phases import baselines
from sustaindiffusion.search.phases.base import Context, ImagePlan, Phase
from sustaindiffusion.search.population import Population
from sustaindiffusion.search.reference import CONSTRAINTS, DEFAULTS_ID, Reference

SEED = 3


def planned_result(plan: ImagePlan, candidate: Candidate) -> EvaluationResult:
    """What a worker would report for the candidate's images in `plan`."""
    own = plan.first_image_of(candidate.candidate_id)
    first = own if own is not None else plan.first_image
    return simulate(
        candidate.candidate_id, candidate.settings, plan.images_per_prompt, SEED, first_image=first
    )


def tell_all(
    phase: Phase, evaluate: Callable[[ImagePlan, Candidate], EvaluationResult] = planned_result
) -> None:
    """Everything the phase asks now, as its plan says (one part: a phase may move on to another)."""
    plan = phase.plan()
    for candidate in phase.pending():
        phase.tell(evaluate(plan, candidate))


def generation_context(spec: SustainSearchSpec, generation: int = 1) -> Context:
    """The context of `generation` (1 or later): the baselines told, the reference fixed, every
    earlier generation's new candidates evaluated whole and told to NSGA-II, this one's asked."""
    encoding = SearchSpaceEncoding(spec.search_space)
    nsga = AskTellNSGA2(
        encoding.variables(),
        n_objectives=len(spec.objectives),
        n_constraints=len(CONSTRAINTS),
        pop_size=spec.algorithm.population_size,
        seed=spec.algorithm.seed,
        key=lambda genome: encoding.decode(genome).candidate_id(),
    )
    ledger = Ledger()
    context = Context(spec, 0, ledger, Reference(spec), nsga, encoding)
    tell_all(baselines.start(context))
    defaults = ledger.result(DEFAULTS_ID)
    assert defaults is not None
    reference = Reference.of_defaults(spec, defaults)
    assert reference is not None
    for number in range(1, generation + 1):
        population = Population.ask(nsga, encoding, ledger, number)
        context = Context(spec, number, ledger, reference, nsga, encoding, population)
        if number < generation:
            images = spec.prompts.images_per_prompt
            plan = ImagePlan(Part.WHOLE, number, population.candidates, images)
            for candidate in context.new_candidates(population.candidates):
                if ledger.result(candidate.candidate_id) is None:
                    ledger.record(planned_result(plan, candidate), number, images)
            population.tell(nsga, ledger, reference)
    return context
