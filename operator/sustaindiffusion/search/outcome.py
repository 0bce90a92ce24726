"""Where a search stands: running, or finished with a reason and a message, and the rules that end
it. The engine owns its outcome (`SearchEngine.outcome`); callers ask it, none re-derives it.

A search fails because the defaults could not be evaluated (BaselineFailed) or more candidates
failed than `execution.maxFailedCandidates` allows (TooManyFailures); it succeeds when a stopping
rule fires after a generation (generations, evaluation or energy budget, hypervolume stagnation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sustaindiffusion.api.spec import SustainSearchSpec


class OutcomeState(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class OutcomeReason(StrEnum):
    RUNNING = "Running"
    VALIDATING = "Validating"
    GENERATIONS_COMPLETED = "GenerationsCompleted"
    EVALUATION_BUDGET = "EvaluationBudget"
    ENERGY_BUDGET = "EnergyBudget"
    HYPERVOLUME_STAGNATION = "HypervolumeStagnation"
    BASELINE_FAILED = "BaselineFailed"
    TOO_MANY_FAILURES = "TooManyFailures"


@dataclass(frozen=True)
class Outcome:
    """Where the search stands: running, or finished with a reason (CamelCase) and a message."""

    state: OutcomeState
    reason: OutcomeReason
    message: str

    @property
    def finished(self) -> bool:
        return self.state is not OutcomeState.RUNNING

    @property
    def failed(self) -> bool:
        return self.state is OutcomeState.FAILED


def running(message: str, validating: bool = False) -> Outcome:
    reason = OutcomeReason.VALIDATING if validating else OutcomeReason.RUNNING
    return Outcome(OutcomeState.RUNNING, reason, message)


def baseline_failed(reason: str | None) -> Outcome:
    return Outcome(
        OutcomeState.FAILED,
        OutcomeReason.BASELINE_FAILED,
        f"the model's default settings could not be evaluated ({reason}); "
        "the quality constraint and the energy scale refer to them",
    )


def too_many_failures(failures: int, limit: int) -> Outcome | None:
    """The failure limit is the spec's current one: raising it lets a search that failed for it go on."""
    if failures <= limit:
        return None
    return Outcome(
        OutcomeState.FAILED,
        OutcomeReason.TOO_MANY_FAILURES,
        f"{failures} candidates failed, more than spec.execution.maxFailedCandidates "
        f"({limit}); see the archive for their reasons",
    )


def stopping_rule(
    spec: SustainSearchSpec, completed: int, evaluations: int, joules: float, hypervolumes: Sequence[float]
) -> Outcome | None:
    """The rule that ends the search after `completed` NSGA-II generations, if one fires."""
    algorithm = spec.algorithm

    def succeeded(reason: OutcomeReason, message: str) -> Outcome:
        return Outcome(OutcomeState.SUCCEEDED, reason, message)

    if completed >= algorithm.generations:
        return succeeded(
            OutcomeReason.GENERATIONS_COMPLETED, f"completed {algorithm.generations} generations"
        )
    budget = algorithm.termination.max_evaluations
    if budget is not None and evaluations + algorithm.population_size > budget:
        return succeeded(
            OutcomeReason.EVALUATION_BUDGET,
            f"evaluation budget: another generation would exceed {budget} evaluations",
        )
    energy = algorithm.termination.energy_budget_joules
    if energy is not None and joules >= energy:
        return succeeded(OutcomeReason.ENERGY_BUDGET, f"energy budget: {joules:.0f} J used of {energy:.0f} J")
    stagnation = algorithm.termination.hypervolume_stagnation
    if stagnation is not None and len(hypervolumes) > stagnation.generations:
        before, now = hypervolumes[-1 - stagnation.generations], hypervolumes[-1]
        if now - before <= stagnation.tolerance * max(before, 1e-12):
            return succeeded(
                OutcomeReason.HYPERVOLUME_STAGNATION,
                f"hypervolume stagnation: improved by {now - before:.3g} over the last "
                f"{stagnation.generations} generations",
            )
    return None
