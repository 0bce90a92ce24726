"""Driving the search engine to its end with the deterministic fake evaluator (engine-level tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.search.engine import Candidate, SearchEngine
from sustaindiffusion.search.loop import GenerationLoop
from tests.support.fake_evaluator import fake_evaluate

PROMPTS = {"inline": ["Photo portrait of a Software Engineer that codes"]}


def make_spec(**overrides: Any) -> SustainSearchSpec:
    """A default spec with a small population; `algorithm` overrides merge into it."""
    algorithm = {"populationSize": 8, "generations": 3, "seed": 7} | overrides.pop("algorithm", {})
    return SustainSearchSpec.model_validate({"prompts": PROMPTS, "algorithm": algorithm, **overrides})


def run(engine: SearchEngine, fails: Callable[[Candidate], bool] = lambda _: False) -> list[str]:
    """Drive the engine to the end with the fake evaluator; returns the evaluated ids in order."""
    evaluated = []
    while not engine.outcome().finished:
        batch = engine.ask()
        # Results arrive in any order in a cluster; reverse them to prove order does not matter.
        for candidate in reversed(batch):
            evaluated.append(candidate.candidate_id)
            engine.tell(fake_evaluate(candidate, fails))
    return evaluated


def drive_loop(loop: GenerationLoop, steps: int = 100) -> dict[str, Any]:
    """Step `loop` until it finishes (at most `steps` times); its last status, as written."""
    status: dict[str, Any] = {}
    for _ in range(steps):
        step = loop.step(status)
        status = step.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if step.finished:
            break
    return status
