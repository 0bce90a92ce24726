"""The status projection: it stays small at 10,000 evaluations, keeps the front's extremes, and
keeps condition transition times until a condition changes."""

from __future__ import annotations

import json

from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.status import Phase
from sustaindiffusion.search.decisions import ConditionUpdate, Decision
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.status import build_status, cap_front, merge_conditions
from tests.support.engine_runs import run


def test_status_stays_under_64_kib_with_10000_evaluations() -> None:
    spec_10k = SustainSearchSpec.model_validate(
        {
            "prompts": {"inline": ["a portrait"]},
            "algorithm": {
                "populationSize": 64,
                "generations": 400,
                "seed": 3,
                "termination": {"maxEvaluations": 10_001},
            },
            "objectives": [
                {"name": "GenderBias"},
                {"name": "EthnicBias"},
                {"name": "Energy"},
                {"name": "Quality"},
            ],
        }
    )
    engine = SearchEngine(spec_10k)
    run(engine)
    assert engine.evaluations >= 9_900
    decision = Decision(
        Phase.SUCCEEDED, [ConditionUpdate("Complete", True, "SearchFinished", "done")], "done"
    )
    status = build_status(engine, decision, {}, observed_generation=1)
    size = len(json.dumps(status.model_dump(mode="json", by_alias=True, exclude_none=True)).encode())
    assert len(status.front or []) <= 50
    assert status.front_size is not None
    assert status.front_size >= len(status.front or [])
    assert size < 64 * 1024, f"status is {size} bytes"


def test_front_cap_keeps_the_extremes() -> None:
    engine = SearchEngine(
        SustainSearchSpec.model_validate(
            {"prompts": {"inline": ["p"]}, "algorithm": {"populationSize": 32, "generations": 6, "seed": 1}}
        )
    )
    run(engine)
    front = engine.front()
    capped = cap_front(front, 3)
    first = [next(iter(p.objectives.values())) for p in front]
    assert len(capped) == min(3, len(front))
    assert next(iter(capped[0].objectives.values())) == min(first)
    assert next(iter(capped[-1].objectives.values())) == max(first)


def test_conditions_keep_their_transition_time_until_they_change() -> None:
    before = [
        {
            "type": "Queued",
            "status": "True",
            "reason": "JobSuspended",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ]
    same = merge_conditions(before, [ConditionUpdate("Queued", True, "JobSuspended")], 3)
    assert same[0].last_transition_time == "2026-01-01T00:00:00Z"
    assert same[0].observed_generation == 3
    changed = merge_conditions(before, [ConditionUpdate("Queued", False, "Admitted")], 3)
    assert changed[0].last_transition_time != "2026-01-01T00:00:00Z"
