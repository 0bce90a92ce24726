"""Generation 0: the model's default settings and the spec's own configurations (`spec.baselines`),
each evaluated whole, once (a configuration equal to another is one candidate). The defaults fix
the reference (`search.reference`) when this phase is done; the others are reported beside the
front."""

from __future__ import annotations

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.spec import Configuration
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.phases.base import Context, WholeEvaluation
from sustaindiffusion.search.reference import DEFAULTS_BASELINE


def start(context: Context) -> WholeEvaluation:
    named = [(DEFAULTS_BASELINE, CandidateSettings())]
    for configuration in context.spec.baselines or []:
        settings = _settings_of(configuration)
        named.append((configuration.name, settings.canonical() if context.encoding.canonical else settings))
    candidates: list[Candidate] = []
    for name, settings in named:
        candidate = context.ledger.remember(Candidate(settings.candidate_id(), 0, settings, baseline=name))
        if all(c.candidate_id != candidate.candidate_id for c in candidates):
            candidates.append(candidate)
    return WholeEvaluation(context, candidates)


def _settings_of(configuration: Configuration) -> CandidateSettings:
    return CandidateSettings(
        inference_steps=configuration.inference_steps,
        guidance_scale=configuration.guidance_scale,
        positive_keywords=list(configuration.positive_keywords),
        negative_keywords=list(configuration.negative_keywords),
        prompt_weight=configuration.prompt_weight
        if configuration.positive_keywords or configuration.negative_keywords
        else 0,
    )
