"""Driving the search engine to its end with the deterministic fake evaluator (engine-level tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.simulator import simulate
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.engine import Candidate, SearchEngine, Stage
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
        validating = engine.stage is Stage.VALIDATION
        part = engine.part
        first_image, images = engine.image_range()
        if validating and spec.validation is not None:
            images = spec.validation.images_per_prompt
        for candidate in engine.ask():
            own = engine.first_image(candidate.candidate_id)
            start = own if own is not None else first_image
            if candidate.candidate_id.startswith("f") and not validating:
                result = EvaluationResult.failed(candidate.candidate_id, FIXTURE_FAILURE)
            else:
                result = simulate(candidate.candidate_id, candidate.settings, images, seed, first_image=start)
            if validating and result.ok and spec.validation is not None:
                prompts = len(spec.validation.prompts.inline or [])
                result.per_prompt = fake_prompt_stats(candidate.settings, prompts, images)
            stage = "validation" if validating else (None if part is Part.WHOLE else part.value)
            record = ArchiveRecord(generation=engine.generation, stage=stage, result=result)
            records.append(record if canonical_ids else record.model_copy(update={"format": 2}))
            engine.tell(result, part if stage not in (None, "validation") else None)
    return records
