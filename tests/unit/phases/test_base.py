"""The image plan as a worker's task: every field the phase decides reaches the task, the rest comes
from the spec, and a launched round is recognised as the plan's."""

from __future__ import annotations

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.spec import SeedPolicy
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.phases.base import ImagePlan
from tests.support.engine_runs import make_spec

SPEC = make_spec(execution={"candidatesPerPod": 3, "retriesPerCandidate": 2})
CANDIDATES = tuple(
    Candidate(CandidateSettings(inference_steps=s).candidate_id(), 4, CandidateSettings(inference_steps=s))
    for s in (10, 20, 30, 40)
)


def test_a_part_of_the_images_reaches_the_task_with_each_candidates_own_first_image() -> None:
    own = {CANDIDATES[1].candidate_id: 24}
    plan = ImagePlan(Part.EVIDENCE, 4, CANDIDATES, 6, own_first_image=own)
    task = plan.task("s", SPEC, ["p", "q"], save_images=True, round=2)
    assert (task.part, task.generation, task.round, task.first_image, task.images_per_prompt) == (
        Part.EVIDENCE,
        4,
        2,
        0,
        6,
    )
    assert [c.first_image for c in task.candidates] == [None, 24, None, None]
    assert (task.candidates_per_shard, task.shard_count, task.retries) == (3, 2, 2)
    assert (task.seeds, task.seed_stream, task.per_prompt) == (SPEC.prompts.seeds, "", False)
    assert task.prompts == ["p", "q"]
    assert task.save_images
    assert plan.launched_as(task)
    assert not ImagePlan(Part.REST, 4, CANDIDATES, 6).launched_as(task)


def test_a_held_out_plan_names_its_seeds_stream_and_shards_and_the_part_tasks_know() -> None:
    plan = ImagePlan(
        Part.VALIDATION,
        4,
        CANDIDATES,
        2,
        held_out=True,
        seeds=SeedPolicy(base=9),
        seed_stream="validation",
        per_prompt=True,
        candidates_per_shard=1,
        task_part=Part.WHOLE,
    )
    task = plan.task("s", SPEC, ["held"], save_images=False, round=0)
    assert (task.part, task.seeds, task.seed_stream, task.per_prompt) == (
        Part.WHOLE,
        SeedPolicy(base=9),
        "validation",
        True,
    )
    assert (task.candidates_per_shard, task.shard_count) == (1, 4)
    assert plan.launched_as(task)
    whole = ImagePlan(Part.WHOLE, 4, CANDIDATES, 2)
    assert not whole.launched_as(task)  # a search round of the same generation is not a held-out one
