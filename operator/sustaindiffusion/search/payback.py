"""The search's own energy bill, and when a chosen configuration repays it.

A search spends energy (every evaluation: baselines, NSGA-II generations, held-out validation);
a configuration that uses less energy per image than the model's defaults saves some on every
image generated with it afterwards. The payback is the number of images after which the savings
equal the bill. The saving is measured on the same images for both: the held-out validation's
when the point was validated (fresh prompts and seeds), else the search's own prompts and seeds
(in-sample, so optimistic). Evaluations that failed report no energy and are not in the bill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.reference import DEFAULTS_BASELINE

Basis = Literal["held-out", "in-sample"]


@dataclass(frozen=True)
class Payback:
    search_joules: float
    saved_joules_per_image: float | None  # against the defaults; None: no measurement of both
    basis: Basis | None

    @property
    def images(self) -> int | None:
        """Images until the savings repay the search; None when nothing is saved per image."""
        if self.saved_joules_per_image is None or self.saved_joules_per_image <= 0:
            return None
        return math.ceil(self.search_joules / self.saved_joules_per_image)

    def describe(self) -> str:
        bill = f"the search spent {self.search_joules / 3.6e6:.4g} kWh ({self.search_joules:.4g} J)"
        if self.saved_joules_per_image is None:
            return f"{bill}; no energy measurement of both this point and the defaults to compare"
        if self.images is None:
            return (
                f"{bill}; this point saves no energy against the defaults "
                f"({-self.saved_joules_per_image:.4g} J per image more, {self.basis}): it never repays it"
            )
        return (
            f"{bill}; this point saves {self.saved_joules_per_image:.4g} J per image against the defaults "
            f"({self.basis}), so it repays the search after {self.images:,} images"
        )

    def as_document(self) -> dict[str, object]:
        return {
            "searchJoules": self.search_joules,
            "savedJoulesPerImage": self.saved_joules_per_image,
            "basis": self.basis,
            "images": self.images,
        }


def _energy(result: EvaluationResult | None) -> float | None:
    return result.metrics.energy_joules_per_image if result is not None and result.metrics else None


def payback(engine: SearchEngine, candidate_id: str) -> Payback:
    """The payback of the search's candidate `candidate_id` (a front point, usually)."""
    validation = engine.validation()
    defaults_held_out = next((_energy(r) for c, r in validation if c.role == DEFAULTS_BASELINE), None)
    point_held_out = next(
        (_energy(r) for c, r in validation if c.candidate_id == candidate_id and c.role != DEFAULTS_BASELINE),
        None,
    )
    if defaults_held_out is not None and point_held_out is not None:
        return Payback(engine.total_energy_joules, defaults_held_out - point_held_out, "held-out")
    defaults = engine.defaults_metrics()
    defaults_energy = defaults.energy_joules_per_image if defaults is not None else None
    point_energy = _energy(engine.result(candidate_id))
    if defaults_energy is not None and point_energy is not None:
        return Payback(engine.total_energy_joules, defaults_energy - point_energy, "in-sample")
    return Payback(engine.total_energy_joules, None, None)
