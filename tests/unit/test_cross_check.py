"""The cross-check, operator side: the agreement counts through the termination message and the
merge of a candidate's parts, the DetectorsDisagree condition and event (pure, and through the
generation loop), and the report's warning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sustaindiffusion.api.agreement import Agreement, disagreeing
from sustaindiffusion.api.results import EvaluationResult, Metrics
from sustaindiffusion.api.spec import ScoringSpec
from sustaindiffusion.api.status import Phase
from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.api.wire import ShardReport, decode_report, encode_report
from sustaindiffusion.local.report import write_report
from sustaindiffusion.search.decisions import (
    DETECTORS_DISAGREE,
    CrossCheckView,
    Event,
    Observation,
    decide,
    detectors_condition,
)
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.loop import Collected, GenerationLoop
from sustaindiffusion.search.merging import merged
from sustaindiffusion.search.outcome import Outcome, OutcomeReason, OutcomeState
from tests.support.engine_runs import make_spec
from tests.support.fake_evaluator import fake_metrics
from tests.support.fake_executor import FakeExecutor, MemoryArchive

CROSS_CHECK = {"crossCheck": {"family": "Clip", "maxDisagreement": 0.2}}


def counts(person: int, persons: int, gender: int, ethnicity: int, images: int = 20) -> Metrics:
    return Metrics(
        gender_bias=0.2,
        ethnic_bias=0.4,
        quality=0.3,
        energy_joules_per_image=10.0,
        seconds_per_image=1.0,
        images=images,
        human_images=persons,
        female_images=persons // 2,
        male_images=persons - persons // 2,
        white_images=persons,
        asian_images=0,
        black_images=0,
        arab_images=0,
        cross_check_person_agreed=person,
        cross_check_persons=persons,
        cross_check_gender_agreed=gender,
        cross_check_ethnicity_agreed=ethnicity,
    )


# ----------------------------------------------------------------------------- the counts


def test_agreement_shares_and_the_largest_disagreement() -> None:
    agreement = Agreement.of(counts(person=19, persons=15, gender=12, ethnicity=9))
    assert agreement is not None
    assert agreement.shares() == {"person": 0.95, "gender": 0.8, "ethnicity": 0.6}
    assert agreement.disagreement == pytest.approx(0.4)
    assert agreement.exceeds(0.2)
    assert not agreement.exceeds(0.4)
    assert agreement.describe() == "person 95% (19/20), gender 80% (12/15), ethnicity 60% (9/15)"
    nobody = Agreement.of(counts(person=20, persons=0, gender=0, ethnicity=0))
    assert nobody is not None
    assert nobody.disagreement == 0.0  # the gate agreed everywhere; nothing else to compare
    assert nobody.describe() == "person 100% (20/20), gender -, ethnicity -"
    plain = counts(1, 1, 1, 1).model_copy(update={"cross_check_person_agreed": None})
    assert Agreement.of(plain) is None


def test_the_counts_must_come_together_and_nest() -> None:
    with pytest.raises(ValidationError, match="cross-check counts"):
        counts(person=21, persons=10, gender=5, ethnicity=5)  # more agreements than images
    with pytest.raises(ValidationError, match="cross-check counts"):
        counts(person=20, persons=10, gender=11, ethnicity=5)  # more gender agreements than persons
    values = counts(20, 10, 5, 5).model_dump() | {"cross_check_persons": None}
    with pytest.raises(ValidationError, match="cross-check counts"):
        Metrics.model_validate(values)


def test_the_counts_survive_the_termination_message_and_a_result_without_them_costs_nothing() -> None:
    report = ShardReport(generation=2, shard=0)
    checked = counts(person=17, persons=14, gender=11, ethnicity=7)
    plain = checked.model_copy(
        update=dict.fromkeys(
            (
                "cross_check_person_agreed",
                "cross_check_persons",
                "cross_check_gender_agreed",
                "cross_check_ethnicity_agreed",
            )
        )
    )
    report.results = [
        EvaluationResult.succeeded("0123456789abcdef", checked),
        EvaluationResult.succeeded("fedcba9876543210", plain),
    ]
    text = encode_report(report)
    rows = json.loads(text)["r"]
    assert rows[0][-4:] == [17, 14, 11, 7]
    assert None not in rows[1]  # trailing absent fields are left out, and read back as absent
    decoded = decode_report(text)
    assert decoded.results[0].metrics == checked
    assert decoded.results[1].metrics == plain


def test_the_largest_shard_fits_with_cross_check_counts() -> None:
    report = ShardReport(generation=2, shard=0)
    metrics = counts(person=999, persons=998, gender=997, ethnicity=996, images=1000).model_copy(
        update={
            "quality_stddev": 0.0123456,
            "energy_stderr": 1.234567,
            "regenerated_images": 123,
            "quality_scores": 1000,
            "gpu_joules": 98765.4321,
            "cpu_joules": 1234.5678,
        }
    )
    report.results = [EvaluationResult.succeeded(f"{i:016x}", metrics) for i in range(16)]
    assert len(encode_report(report).encode()) <= 4096


def test_two_parts_merge_their_counts_exactly() -> None:
    first = counts(person=9, persons=8, gender=6, ethnicity=4, images=10)
    rest = counts(person=10, persons=7, gender=6, ethnicity=5, images=10)
    both = merged(first, rest)
    assert (
        both.cross_check_person_agreed,
        both.cross_check_persons,
        both.cross_check_gender_agreed,
        both.cross_check_ethnicity_agreed,
        both.images,
    ) == (19, 15, 12, 9, 20)
    agreement = Agreement.of(both)
    assert agreement is not None
    assert agreement.shares() == {"person": 0.95, "gender": 0.8, "ethnicity": 0.6}
    unchecked = rest.model_copy(
        update={
            "cross_check_person_agreed": None,
            "cross_check_persons": None,
            "cross_check_gender_agreed": None,
            "cross_check_ethnicity_agreed": None,
        }
    )
    assert Agreement.of(merged(first, unchecked)) is None  # not known for all the images: unknown


# ----------------------------------------------------------------------------- the condition

RUNNING = Outcome(OutcomeState.RUNNING, OutcomeReason.RUNNING, "generation 2")


def view(limit: float = 0.2, **results: Metrics) -> CrossCheckView | None:
    scoring = ScoringSpec.model_validate({"crossCheck": {"family": "Clip", "maxDisagreement": limit}})
    return CrossCheckView.of(
        scoring.cross_check, [EvaluationResult.succeeded(name, metrics) for name, metrics in results.items()]
    )


def test_no_cross_check_no_condition() -> None:
    assert CrossCheckView.of(None, []) is None
    events: list[Event] = []
    assert detectors_condition(None, {}, events) == []
    decision = decide(Observation(2, RUNNING), {})
    assert DETECTORS_DISAGREE not in {c.type for c in decision.conditions}


def test_agreeing_detectors_are_a_false_condition() -> None:
    events: list[Event] = []
    [condition] = detectors_condition(view(a=counts(20, 15, 14, 13)), {}, events)
    assert (condition.type, condition.status, condition.reason) == (
        DETECTORS_DISAGREE,
        False,
        "DetectorsAgree",
    )
    assert condition.message.startswith("1 candidates cross-checked by the Clip family: none disagrees")
    assert events == []


def test_disagreeing_candidates_are_named_worst_first_with_one_warning() -> None:
    seen = view(
        a=counts(20, 15, 14, 13),  # 13% at most: within 20%
        b=counts(20, 15, 10, 15),  # gender 67%: 33% disagreement
        c=counts(10, 10, 10, 10),  # person gate 50%
    )
    assert seen is not None
    assert [candidate for candidate, _ in seen.disagreeing] == ["c", "b"]
    events: list[Event] = []
    [condition] = detectors_condition(seen, {}, events)
    assert condition.status is True
    assert condition.reason == DETECTORS_DISAGREE
    assert "disagree on more than 20% of the images" in condition.message
    assert "of 2 of 3 candidates: c (50%), b (33%)" in condition.message
    assert [(e.type, e.reason) for e in events] == [("Warning", DETECTORS_DISAGREE)]
    stored = {"conditions": [{"type": DETECTORS_DISAGREE, "status": "True"}]}
    again: list[Event] = []
    detectors_condition(seen, stored, again)
    assert again == []  # a transition only


def test_the_message_names_ten_and_counts_the_rest() -> None:
    many = {f"{i:02d}": counts(10, 10, 10, 10) for i in range(13)}
    seen = view(**many)
    [condition] = detectors_condition(seen, {}, [])
    assert condition.message.count("(50%)") == 10
    assert "and 3 more" in condition.message


def test_the_running_and_the_finished_decisions_carry_the_condition() -> None:
    seen = view(c=counts(10, 10, 10, 10))
    running = decide(Observation(2, RUNNING, cross_check=seen), {})
    assert {c.type: c.status for c in running.conditions}[DETECTORS_DISAGREE] is True
    assert DETECTORS_DISAGREE in [e.reason for e in running.events]
    done = Outcome(OutcomeState.SUCCEEDED, OutcomeReason.GENERATIONS_COMPLETED, "done")
    finished = decide(Observation(3, done, cross_check=seen), {"phase": "Running"})
    assert finished.phase is Phase.SUCCEEDED
    assert {c.type: c.status for c in finished.conditions}[DETECTORS_DISAGREE] is True


class CrossCheckingExecutor(FakeExecutor):
    """The fake executor, its workers cross-checked: a candidate whose id starts with 0 to 7 has
    detectors that agree on every image, the others on half the person gates."""

    def collect(self, task: EvaluationTask) -> Collected:
        assert task.scoring.cross_check is not None  # the task tells the worker to cross-check
        collected = super().collect(task)
        for outcome in collected.shards.values():
            for result in outcome.results:
                if result.metrics is not None:
                    images = result.metrics.images
                    agreed = images if result.candidate_id[0] in "01234567" else images // 2
                    result.metrics = result.metrics.model_copy(
                        update={
                            "cross_check_person_agreed": agreed,
                            "cross_check_persons": agreed,
                            "cross_check_gender_agreed": agreed,
                            "cross_check_ethnicity_agreed": agreed,
                        }
                    )
        return collected


def test_the_loop_sets_the_condition_from_the_archived_results_and_warns_once() -> None:
    spec = make_spec(scoring=CROSS_CHECK)
    archive, executor = MemoryArchive(), CrossCheckingExecutor()
    loop = GenerationLoop("s", spec, archive, executor, prompts=lambda: ["a portrait"], save_images=False)
    status: dict[str, Any] = {}
    warnings = []
    for _ in range(200):
        step = loop.step(status)
        status = step.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        warnings += [e for e in step.events if e.reason == DETECTORS_DISAGREE]
        if step.finished:
            break
    assert status["phase"] == "Succeeded"
    flagged = sorted(
        {r.candidate_id for r in archive.records if r.candidate_id[0] not in "01234567" and r.result.ok}
    )
    assert flagged, "the fake search should have some disagreeing candidates"
    [condition] = [c for c in status["conditions"] if c["type"] == DETECTORS_DISAGREE]
    assert condition["status"] == "True"
    assert f"of {len(flagged)} of {len(archive.records)} candidates" in condition["message"]
    for candidate in flagged[: CrossCheckView.NAMED]:  # all at 50%: named in id order
        assert f"{candidate} (50%)" in condition["message"]
    assert len(warnings) == 1  # posted when the condition turned True, not at every step
    # Each front point carries its own disagreement (the worst question's), as the archive counts it.
    told = {r.candidate_id: r.result.metrics for r in archive.records if r.result.metrics is not None}
    assert status["front"]
    for entry in status["front"]:
        agreement = Agreement.of(told[entry["candidateId"]])
        assert agreement is not None
        assert agreement.disagreement is not None
        assert entry["crossCheckDisagreement"] == pytest.approx(agreement.disagreement, abs=1e-4)


# ----------------------------------------------------------------------------- the report


def _run_with_counts(engine: SearchEngine, disagrees: set[int]) -> list[str]:
    """Drive the engine with the fake evaluator, every result cross-checked; the candidates asked
    at the positions in `disagrees` get a person gate agreeing on half their images."""
    ids: list[str] = []
    while not engine.outcome().finished:
        for candidate in engine.ask():
            metrics = fake_metrics(candidate.settings)  # 4 images
            bad = len(ids) in disagrees
            metrics = metrics.model_copy(
                update={
                    "cross_check_person_agreed": 2 if bad else 4,
                    "cross_check_persons": 2,
                    "cross_check_gender_agreed": 2,
                    "cross_check_ethnicity_agreed": 2,
                }
            )
            ids.append(candidate.candidate_id)
            engine.tell(EvaluationResult.succeeded(candidate.candidate_id, metrics))
    return ids


def test_the_report_shows_each_candidates_agreement_and_warns_of_disagreement(tmp_path: Path) -> None:
    engine = SearchEngine(make_spec(scoring=CROSS_CHECK, algorithm={"generations": 1}))
    ids = _run_with_counts(engine, disagrees={0, 3})
    page = write_report("crossed", engine, None, tmp_path).read_text()
    assert "Detector cross-check: Clip checks Vqa" in page
    assert 'class="warn">&#9888; Warning: the Vqa detector and the Clip cross-check disagree on more ' in page
    assert f"of 2 candidates ({ids[0]}, {ids[3]})" in page or f"of 2 candidates ({ids[3]}, {ids[0]})" in page
    assert page.count("person 50% (2/4), gender 100% (2/2), ethnicity 100% (2/2)") >= 2
    assert "person 100% (4/4), gender 100% (2/2), ethnicity 100% (2/2)" in page
    for candidate in ids:  # every evaluated candidate has its row
        assert f"<tr><td><code>{candidate}</code></td><td>search</td>" in page
    assert "cross-checked by Clip (openai/clip-vit-base-patch32): 2 of" in page


def test_a_report_without_cross_check_has_no_such_section(tmp_path: Path) -> None:
    engine = SearchEngine(make_spec(algorithm={"generations": 1}))
    _run_with_counts(engine, disagrees=set())
    page = write_report("plain", engine, None, tmp_path).read_text()
    assert "Detector cross-check" not in page
    assert "detectors agree" not in page
    assert "no cross-check (spec.scoring.crossCheck)" in page


def test_disagreeing_lists_only_results_over_the_limit() -> None:
    results = [
        EvaluationResult.succeeded("a", counts(20, 10, 10, 10)),
        EvaluationResult.succeeded("b", counts(15, 10, 10, 10)),  # 25%
        EvaluationResult.failed("c", "oom"),
    ]
    assert [candidate for candidate, _ in disagreeing(results, 0.2)] == ["b"]
    assert disagreeing(results, 0.25) == []
