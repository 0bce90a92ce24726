"""Encoding of a spec's search space into pymoo variables, and decoding back to settings.

- inference steps: one Integer variable over [min, max];
- guidance scale: one Integer variable indexing the grid min + k * step (no float drift);
- keywords: one Binary variable per keyword of each searched pool, so every keyword is
  independently reachable and, under uniform sampling, selected with probability 1/2;
- prompt weight: one Integer variable over [min, max].
Fixed variables are not encoded; their value is used as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymoo.core.variable import Binary, Integer, Variable

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.spec import SearchSpace

STEPS = "steps"
GUIDANCE = "guidance"
WEIGHT = "weight"
POSITIVE_PREFIX = "pos"
NEGATIVE_PREFIX = "neg"

Genome = Mapping[str, Any]


def _grid_size(low: float, high: float, step: float) -> int:
    # A tolerance keeps 0.0..20.0 by 0.1 at 201 points despite binary floating point.
    return math.floor((high - low) / step + 1e-9) + 1


def _bounds(low: float | None, high: float | None) -> tuple[float, float]:
    if low is None or high is None:
        raise ValueError("a searched range needs min and max")  # the spec's rules guarantee both
    return low, high


@dataclass(frozen=True)
class SearchSpaceEncoding:
    """`canonical`: decode to the settings' canonical form (`CandidateSettings.canonical`); off only
    to replay archives begun before candidate ids were canonical (record format 2 and older)."""

    space: SearchSpace
    canonical: bool = True

    def variables(self) -> dict[str, Variable]:
        """The pymoo variables, in a fixed order (it is part of the determinism contract)."""
        variables: dict[str, Variable] = {}
        steps = self.space.inference_steps
        if steps.searched:
            variables[STEPS] = Integer(bounds=_bounds(steps.min, steps.max))
        guidance = self.space.guidance_scale
        if guidance.searched:
            low, high = _bounds(guidance.min, guidance.max)
            variables[GUIDANCE] = Integer(bounds=(0, _grid_size(low, high, guidance.step) - 1))
        if self.space.positive_keywords.pool is not None:
            for index in range(len(self.space.positive_keywords.pool)):
                variables[f"{POSITIVE_PREFIX}{index:02d}"] = Binary()
        if self.space.negative_keywords.pool is not None:
            for index in range(len(self.space.negative_keywords.pool)):
                variables[f"{NEGATIVE_PREFIX}{index:02d}"] = Binary()
        weight = self.space.prompt_weight
        if weight.searched:
            variables[WEIGHT] = Integer(bounds=_bounds(weight.min, weight.max))
        return variables

    @property
    def n_keyword_bits(self) -> int:
        return len(self.space.positive_keywords.pool or []) + len(self.space.negative_keywords.pool or [])

    def guidance_value(self, index: int) -> float:
        guidance = self.space.guidance_scale
        low, _ = _bounds(guidance.min, guidance.max)
        # Rounding to the step's decimals keeps 0.1 * 3 at 0.3, so equal settings hash equally.
        decimals = max(0, -math.floor(math.log10(guidance.step)) + 1)
        return round(low + index * guidance.step, decimals)

    def decode(self, genome: Genome) -> CandidateSettings:
        """Concrete settings for a genome, in canonical form: equal images share one candidate id.
        (Legacy form: only the weight is normalised to 0 when no keyword is selected.)"""
        space = self.space
        steps = int(genome[STEPS]) if STEPS in genome else space.inference_steps.fixed
        guidance = (
            self.guidance_value(int(genome[GUIDANCE])) if GUIDANCE in genome else space.guidance_scale.fixed
        )
        positive = self._selected(
            space.positive_keywords.pool, space.positive_keywords.fixed, POSITIVE_PREFIX, genome
        )
        negative = self._selected(
            space.negative_keywords.pool, space.negative_keywords.fixed, NEGATIVE_PREFIX, genome
        )
        weight = int(genome[WEIGHT]) if WEIGHT in genome else int(space.prompt_weight.fixed or 0)
        if not positive and not negative:
            weight = 0
        settings = CandidateSettings(
            inference_steps=steps,
            guidance_scale=guidance,
            positive_keywords=positive,
            negative_keywords=negative,
            prompt_weight=weight,
        )
        return settings.canonical() if self.canonical else settings

    @staticmethod
    def _selected(pool: list[str] | None, fixed: list[str] | None, prefix: str, genome: Genome) -> list[str]:
        if pool is None:
            return list(fixed or [])
        return [keyword for index, keyword in enumerate(pool) if bool(genome[f"{prefix}{index:02d}"])]

    def encode(self, settings: CandidateSettings) -> dict[str, Any]:
        """The genome of settings that lie in the space (the inverse of `decode`)."""
        space = self.space
        genome: dict[str, Any] = {}
        variables = self.variables()
        if STEPS in variables:
            genome[STEPS] = settings.inference_steps
        if GUIDANCE in variables:
            low, _ = _bounds(space.guidance_scale.min, space.guidance_scale.max)
            genome[GUIDANCE] = round(((settings.guidance_scale or 0.0) - low) / space.guidance_scale.step)
        for prefix, pool, chosen in (
            (POSITIVE_PREFIX, space.positive_keywords.pool, settings.positive_keywords),
            (NEGATIVE_PREFIX, space.negative_keywords.pool, settings.negative_keywords),
        ):
            for index, keyword in enumerate(pool or []):
                genome[f"{prefix}{index:02d}"] = keyword in chosen
        if WEIGHT in variables:
            genome[WEIGHT] = settings.prompt_weight
        return genome
