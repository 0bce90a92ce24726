"""Choosing one configuration from a front and writing it as a ready-to-use generation profile."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.objectives import BY_SYMBOL
from sustaindiffusion.api.spec import ModelSpec
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.prompt_counts import verdict
from sustaindiffusion.search.reference import FrontPoint
from sustaindiffusion.search.status import validation_status

PROFILE_VERSION = 1
_LEAST_ENERGY = re.compile(r"^least-energy(?::(.*))?$")
_BOUND = re.compile(r"^([a-z]+)(<=|>=)([0-9.]+)$")


class SelectionError(ValueError):
    pass


@dataclass(frozen=True)
class Selection:
    point: FrontPoint
    rule: str


def knee_point(engine: SearchEngine, front: Sequence[FrontPoint]) -> FrontPoint:
    """The point nearest the ideal in normalised objective space (every objective at its best)."""
    if not front:
        raise SelectionError("the front is empty")
    normalised = np.array([engine.reference.normalised(p.objectives) for p in front])
    return front[int(np.argmin(np.linalg.norm(np.clip(normalised, 0, None), axis=1)))]


def least_energy(front: Sequence[FrontPoint], bounds: str | None) -> FrontPoint:
    """The least energy per image among front points meeting `bounds`, e.g. "gb<=0.4,eb<=0.3"; a
    bound names any objective by its symbol (gb, eb, q, e, t)."""
    candidates = list(front)
    symbols = ", ".join(f"{symbol}<=X" for symbol in BY_SYMBOL)
    for bound in filter(None, (bounds or "").split(",")):
        match = _BOUND.match(bound.strip())
        if match is None or match.group(1) not in BY_SYMBOL:
            raise SelectionError(f"cannot read bound {bound!r}: use {symbols} (or >=), comma separated")
        info, operator, limit = BY_SYMBOL[match.group(1)], match.group(2), float(match.group(3))
        candidates = [
            p
            for p in candidates
            if (info.value(p.metrics) <= limit if operator == "<=" else info.value(p.metrics) >= limit)
        ]
    if not candidates:
        raise SelectionError(f"no front point meets {bounds}")
    return min(candidates, key=lambda p: p.metrics.energy_joules_per_image)


def select(engine: SearchEngine, rule: str) -> Selection:
    """`rule`: a front candidate id, `knee`, or `least-energy[:gb<=X,eb<=Y,q>=Z]`."""
    front = engine.front()
    if not front:
        raise SelectionError("the search has no front yet")
    if rule == "knee":
        return Selection(knee_point(engine, front), rule)
    match = _LEAST_ENERGY.match(rule)
    if match:
        return Selection(least_energy(front, match.group(1)), rule)
    for point in front:
        if point.candidate.candidate_id == rule:
            return Selection(point, f"candidate {rule}")
    raise SelectionError(f"{rule!r} is neither a front candidate id, 'knee' nor 'least-energy[:bounds]'")


def held_out_values(engine: SearchEngine, candidate_id: str) -> dict[str, Any] | None:
    """The candidate's held-out validation (values, intervals, change against the defaults, per-prompt
    counts), or None when it was not validated."""
    validation = validation_status(engine)
    if validation is None:
        return None
    point = next((p for p in validation.points if p.candidate_id == candidate_id), None)
    if point is None or point.objectives is None:
        return None
    counts = verdict(point.wins or 0, point.pareto or 0, point.losses or 0)
    return {
        "prompts": validation.prompts,
        "imagesPerPrompt": validation.images_per_prompt,
        **point.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"candidate_id"}),
        "perPrompt": counts.as_document(),
    }


def profile(
    model: ModelSpec,
    settings: CandidateSettings,
    selection: Selection,
    resolved: dict[str, Any],
    held_out: dict[str, Any] | None = None,
    payback: dict[str, Any] | None = None,
    audit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A generation profile: what to pass to a diffusers pipeline to generate as this candidate did;
    first, when the search validated it, what held up on held-out prompts and seeds (changes against
    the defaults with intervals, and what the per-prompt counts support), then what the search
    measured (in-sample: the best of many noisy draws on its own seeds); `payback`: when its energy
    saving repays the search (`sustaindiffusion.search.payback`); `audit`: the point's biases as people
    checked them (`sustaindiffusion.audit.findings.Findings.for_profile`), None when not audited."""
    metrics = selection.point.metrics
    return {
        "profileVersion": PROFILE_VERSION,
        "candidateId": selection.point.candidate.candidate_id,
        "chosenBy": selection.rule,
        "heldOut": held_out,
        "model": {
            "id": model.id,
            "revision": model.revision,
            "pipelineClass": model.pipeline_class,
            "dtype": model.dtype.value,
        },
        "pipelineArguments": {
            "num_inference_steps": resolved.get("inferenceSteps", settings.inference_steps),
            "guidance_scale": resolved.get("guidanceScale", settings.guidance_scale),
            "width": model.width,
            "height": model.height,
        },
        "promptAdditions": [settings.weighted_keyword(k) for k in settings.positive_keywords],
        "negativePrompt": settings.negative_prompt(),
        "keywordWeight": {"marks": settings.prompt_weight, "multiplier": settings.keyword_emphasis()},
        "settings": settings.model_dump(mode="json", by_alias=True),
        "measured": {
            "genderBias": metrics.gender_bias,
            "ethnicBias": metrics.ethnic_bias,
            "quality": metrics.quality,
            "energyJoulesPerImage": metrics.energy_joules_per_image,
            "secondsPerImage": metrics.seconds_per_image,
            "energyEstimated": metrics.energy_estimated,
            "validShare": metrics.valid_share,
            "inSample": True,
        },
        "payback": payback,
        "audit": audit,
    }


def diffusers_snippet(document: dict[str, Any]) -> str:
    """Python that applies the profile with diffusers (weights via the worker's embedding weighting).
    The template is a text file: this package never imports the ML stack, not even in a string."""
    arguments = document["pipelineArguments"]
    template = string.Template(resources.files(__package__).joinpath("profile_snippet.txt").read_text())
    return template.substitute(
        profile=json.dumps({k: document[k] for k in ("promptAdditions", "negativePrompt")}, indent=4),
        model=repr(document["model"]["id"]),
        steps=arguments["num_inference_steps"],
        guidance=arguments["guidance_scale"],
        width=arguments["width"],
        height=arguments["height"],
    )
