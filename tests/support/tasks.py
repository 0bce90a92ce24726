"""A worker task of a spec with one candidate per shard, for tests of what is built from a task
(names, Jobs, pods) in the unit and end-to-end suites."""

from __future__ import annotations

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate


def task_of(
    search_spec: SustainSearchSpec,
    generation: int = 0,
    shards: int = 1,
    round: int = 0,
    retries: int | None = None,
) -> EvaluationTask:
    candidates = [
        TaskCandidate(candidate_id=f"{i:016x}", settings=CandidateSettings(inference_steps=10 + i))
        for i in range(shards)
    ]
    return EvaluationTask.of(
        "my-search",
        search_spec,
        generation,
        ["p"],
        candidates,
        1,
        save_images=False,
        round=round,
        retries=retries,
    )
