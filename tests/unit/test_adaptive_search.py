"""The adaptive evidence policy through the engine: its archive replays (an exact repeat dropped,
a batch out of place refused), every candidate's images follow on from the last ones it had, a
stopped candidate is never a front point."""

from __future__ import annotations

from collections import defaultdict

import pytest

from sustaindiffusion.api.results import Screened
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.engine import ReplayMismatchError, SearchEngine
from tests.support.engine_runs import make_spec, recorded_run
from tests.support.phases import planned_result

WHOLE, BATCH = 8, 2


def adaptive_spec() -> SustainSearchSpec:
    return make_spec(
        prompts={"inline": ["p"], "imagesPerPrompt": WHOLE},
        algorithm={"generations": 4, "adaptive": {"imagesPerPrompt": BATCH, "maxImagesPerPrompt": 12}},
    )


def test_an_adaptive_archive_replays_to_the_end_it_recorded() -> None:
    spec = adaptive_spec()
    records = recorded_run(spec)
    assert {r.part for r in records} == {Part.WHOLE, Part.BATCH}
    assert max(r.batch or 0 for r in records) > 0
    live = SearchEngine(spec)
    for record in records:
        live.tell(record.result, record.part, record.batch)
    replayed = SearchEngine.from_archive(spec, records)
    assert replayed.outcome() == live.outcome()
    assert replayed.told == live.told
    assert [p.candidate.candidate_id for p in replayed.front()] == [
        p.candidate.candidate_id for p in live.front()
    ]


def test_an_exact_repeat_of_a_batch_is_dropped_and_a_batch_out_of_place_is_refused() -> None:
    spec = adaptive_spec()
    records = recorded_run(spec)
    later = next(i for i, r in enumerate(records) if r.batch == 1)
    repeated = [*records[: later + 3], records[later], *records[later + 3 :]]
    assert SearchEngine.from_archive(spec, repeated).told == SearchEngine.from_archive(spec, records).told
    misplaced = [*records[:later], records[later].model_copy(update={"batch": 2}), *records[later + 1 :]]
    with pytest.raises(ReplayMismatchError, match="recorded batch 2 result"):
        SearchEngine.from_archive(spec, misplaced)


def test_each_candidates_batches_follow_on_and_a_stopped_one_is_never_on_the_front() -> None:
    engine = SearchEngine(adaptive_spec())
    starts: dict[str, list[int]] = defaultdict(list)
    while not engine.outcome().finished:
        plan = engine.plan()
        for candidate in engine.ask():
            own = plan.first_image_of(candidate.candidate_id)
            starts[candidate.candidate_id].append(own if own is not None else plan.first_image)
            engine.tell(planned_result(plan, candidate), plan.part, plan.batch)
            if plan.part is Part.BATCH:
                front = engine.front()
                told = [engine.ledger.result(p.candidate.candidate_id) for p in front]
                assert all(r is not None and r.screened is not Screened.PARTIAL for r in told)
    batched = [s for s in starts.values() if len(s) > 1]
    assert batched
    for firsts in batched:
        assert firsts == list(range(0, BATCH * len(firsts), BATCH))  # fresh images, never repeated
    stopped = [r for r in engine.told if r.screened is Screened.PARTIAL]
    assert stopped  # the policy stopped some candidates short of a whole evaluation
    assert all(engine.ledger.images_per_prompt(r.candidate_id) < WHOLE for r in stopped)
