"""A generation without screening: every new candidate of the NSGA-II population gets all its
images at once (a candidate evaluated by an earlier generation keeps its result)."""

from __future__ import annotations

from sustaindiffusion.search.phases.base import Context, WholeEvaluation


def start(context: Context) -> WholeEvaluation:
    if context.population is None:
        raise ValueError("a generation's phase starts from its NSGA-II population")
    return WholeEvaluation(context, context.population.candidates)
