"""Held-out validation: which front points to re-evaluate, and what their held-out results say.

A front found on a fixed set of seeds is optimistic: each point is the best of many noisy draws.
When a search ends, the model's defaults and a few front points are evaluated again on prompts the
search never saw, with fresh seeds, one candidate per worker (each prompt's counts travel in its
report, `PromptStats`). Here, pure and deterministic:

- `choose_points`: the knee (nearest the ideal in normalised objectives), then the best point of
  each objective, then points spread over the front (each the farthest from those chosen);
- `held_out`: per point and objective, the value over all held-out images (each objective's
  held-out statistic in the registry: the formula the search uses), a 95% interval from a
  bootstrap over prompts, and the change against the defaults on the same prompts and seeds,
  with a paired interval; and per prompt, whether the point
  dominates the defaults (a win: better in at least one objective, worse in none), is dominated by
  them (a loss), or neither (Pareto: it trades, or ties in every objective), as the method's
  generalisation study counts them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from sustaindiffusion.api.objectives import OBJECTIVES, Direction, ObjectiveName
from sustaindiffusion.api.results import PromptStats
from sustaindiffusion.api.spec import Objective
from sustaindiffusion.api.statistics import prompt_table

BOOTSTRAP_SAMPLES = 1000
CONFIDENCE = 0.95


class _Point(Protocol):
    @property
    def objectives(self) -> dict[str, float]: ...


Point = TypeVar("Point", bound=_Point)


def choose_points(
    front: Sequence[Point], normalised: Callable[[Mapping[str, float]], list[float]], count: int
) -> list[tuple[str, Point]]:
    """Up to `count` (role, point) pairs spanning the front: knee, extremes, then spread."""
    if not front or count <= 0:
        return []
    vectors = np.array([normalised(p.objectives) for p in front])
    names = list(front[0].objectives)
    chosen: list[tuple[str, int]] = [
        ("knee", int(np.argmin(np.linalg.norm(np.clip(vectors, 0, None), axis=1))))
    ]
    for column, name in enumerate(names):
        best = int(np.argmin(vectors[:, column]))
        if all(index != best for _, index in chosen):
            chosen.append((f"best {name}", best))
    while len(chosen) < min(count, len(front)):
        taken = vectors[[index for _, index in chosen]]
        distances = np.min(np.linalg.norm(vectors[:, None, :] - taken[None, :, :], axis=2), axis=1)
        distances[[index for _, index in chosen]] = -1.0
        chosen.append(("spread", int(np.argmax(distances))))
    return [(role, front[index]) for role, index in chosen[:count]]


def _objective(name: ObjectiveName, sums: np.ndarray) -> np.ndarray:
    """An objective from summed rows (the last axis), as its registry row computes it from held-out
    rows (the formula the search uses over a candidate's images), for any leading shape."""
    return OBJECTIVES[name].held_out.value(sums)


def pooled_value(name: ObjectiveName, prompts: Sequence[PromptStats]) -> float:
    """An objective over the images of `prompts`, as the search computes it over a candidate's."""
    return float(_objective(name, prompt_table(prompts).sum(axis=0)))


@dataclass(frozen=True)
class HeldOutValue:
    value: float
    low: float
    high: float
    change_percent: float | None  # against the defaults on the same images; None where they are 0
    # or a bias of theirs rests on no mapped answer
    change_low: float | None
    change_high: float | None


@dataclass(frozen=True)
class HeldOut:
    objectives: dict[str, HeldOutValue]
    wins: int
    pareto: int
    losses: int


def held_out(
    objectives: Sequence[Objective], point: Sequence[PromptStats], defaults: Sequence[PromptStats], seed: int
) -> HeldOut:
    """`point`'s held-out results against the `defaults`' on the same prompts (same order)."""
    if len(point) != len(defaults) or not point:
        raise ValueError("a point and the defaults must be evaluated on the same held-out prompts")
    mine, theirs = prompt_table(point), prompt_table(defaults)
    draws = np.random.default_rng(seed).integers(0, len(point), size=(BOOTSTRAP_SAMPLES, len(point)))
    tail = (1.0 - CONFIDENCE) / 2 * 100
    values: dict[str, HeldOutValue] = {}
    for objective in objectives:
        name = objective.name
        value, base = (float(_objective(name, table.sum(axis=0))) for table in (mine, theirs))
        samples = _objective(name, mine[draws].sum(axis=1))
        base_samples = _objective(name, theirs[draws].sum(axis=1))
        low, high = (float(x) for x in np.percentile(samples, [tail, 100 - tail]))
        change = change_low = change_high = None
        if base != 0 and OBJECTIVES[name].held_out.has_evidence(theirs.sum(axis=0)):
            change = (value - base) / abs(base) * 100
            differences = (samples - base_samples) / abs(base) * 100
            change_low, change_high = (float(x) for x in np.percentile(differences, [tail, 100 - tail]))
        values[name.value] = HeldOutValue(value, low, high, change, change_low, change_high)
    outcomes = prompt_outcomes(objectives, point, defaults)
    wins, losses = int(np.sum(outcomes == 1)), int(np.sum(outcomes == -1))
    return HeldOut(values, wins, len(point) - wins - losses, losses)


def prompt_outcomes(
    objectives: Sequence[Objective], point: Sequence[PromptStats], defaults: Sequence[PromptStats]
) -> np.ndarray:
    """Per held-out prompt: 1 where `point` dominates the defaults (better in at least one
    objective, worse in none), -1 where they dominate it, 0 where it trades or ties."""
    mine, theirs = prompt_table(point), prompt_table(defaults)
    signs = np.array([-1.0 if o.effective_direction is Direction.MAXIMIZE else 1.0 for o in objectives])
    per_prompt_mine = np.stack([_objective(o.name, mine) for o in objectives], axis=-1) * signs
    per_prompt_theirs = np.stack([_objective(o.name, theirs) for o in objectives], axis=-1) * signs
    better = (per_prompt_mine < per_prompt_theirs).any(axis=1)
    worse = (per_prompt_mine > per_prompt_theirs).any(axis=1)
    outcomes: np.ndarray = (better & ~worse).astype(int) - (worse & ~better).astype(int)
    return outcomes


def pooled_objective(name: ObjectiveName, sums: np.ndarray) -> np.ndarray:
    """An objective from `prompt_table` rows summed over the prompts (the last axis kept)."""
    return _objective(name, sums)
