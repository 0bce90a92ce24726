"""Driving the search engine to its end with the deterministic fake evaluator (engine-level tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.simulator import simulate
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.loop import GenerationLoop
from sustaindiffusion.search.records import ArchiveRecord
from tests.support.fake_evaluator import fake_evaluate, fake_prompt_stats

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


FIXTURE_FAILURE = "CUDA out of memory (simulated)"


def recorded_run(spec: SustainSearchSpec, canonical_ids: bool = True, seed: int = 13) -> list[ArchiveRecord]:
    """The archive a search of `spec` writes, evaluated by the benchmark's simulated model (search
    candidates whose id starts with f fail; held-out results carry the fake per-prompt rows), each
    record with the part of the search it belongs to. The archive fixtures of formats 2 and 3 are
    such runs."""
    engine = SearchEngine(spec, canonical_ids)
    records = []
    while not engine.outcome().finished:
        plan = engine.plan()
        validating = plan.part is Part.VALIDATION
        for candidate in engine.ask():
            own = plan.first_image_of(candidate.candidate_id)
            start = own if own is not None else plan.first_image
            images = plan.images_per_prompt
            if candidate.candidate_id.startswith("f") and not validating:
                result = EvaluationResult.failed(candidate.candidate_id, FIXTURE_FAILURE)
            else:
                result = simulate(candidate.candidate_id, candidate.settings, images, seed, first_image=start)
            if validating and result.ok and spec.validation is not None:
                prompts = len(spec.validation.prompts.inline or [])
                result.per_prompt = fake_prompt_stats(candidate.settings, prompts, images)
            batch = plan.batch if plan.part is Part.BATCH else None
            record = ArchiveRecord(generation=plan.generation, part=plan.part, result=result, batch=batch)
            records.append(record if canonical_ids else record.model_copy(update={"format": 2}))
            engine.tell(result, plan.part, batch)
    return records
