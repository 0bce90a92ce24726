"""Numbers a user can deploy on: valid-image and same-device constraints, the held-out validation
stage of the engine and the loop, and the held-out statistics on hand-computed cases."""

from __future__ import annotations

from typing import Any

import pytest

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.objectives import ObjectiveName
from sustaindiffusion.api.results import Device, EvaluationResult, Metrics, PromptStats
from sustaindiffusion.api.spec import Objective
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.heldout import choose_points, held_out, pooled_value
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.loop import GenerationLoop
from sustaindiffusion.search.outcome import OutcomeReason
from sustaindiffusion.search.records import ArchiveRecord
from sustaindiffusion.search.status import change_against, defaults_reference
from tests.support.engine_runs import drive_loop, make_spec, run
from tests.support.fake_evaluator import fake_evaluate, fake_metrics
from tests.support.fake_executor import FakeExecutor, MemoryArchive

VALIDATION = {"prompts": {"inline": ["held-out prompt one", "held-out prompt two", "three"]}, "points": 3}


def counted(settings: CandidateSettings, valid: int, images: int = 10) -> Metrics:
    """fake_metrics with answer counts: `valid` of `images` count for both biases."""
    return fake_metrics(settings).model_copy(
        update={
            "images": images,
            "human_images": valid,
            "female_images": valid // 2,
            "male_images": valid - valid // 2,
            "white_images": valid,
            "asian_images": 0,
            "black_images": 0,
            "arab_images": 0,
        }
    )


def drive_engine(engine: SearchEngine, evaluate: Any) -> None:
    while not engine.outcome().finished:
        for candidate in engine.ask():
            engine.tell(evaluate(candidate))


# ----------------------------------------------------------------------------- constraints


def test_too_few_valid_images_make_a_candidate_infeasible() -> None:
    engine = SearchEngine(
        make_spec(constraints={"validImages": {"minShare": 0.8}}, algorithm={"generations": 4})
    )

    def evaluate(candidate: Candidate) -> EvaluationResult:
        valid = 10 if candidate.baseline or (candidate.settings.inference_steps or 0) % 2 else 3
        return EvaluationResult.succeeded(candidate.candidate_id, counted(candidate.settings, valid))

    drive_engine(engine, evaluate)
    poor = [r for r in engine.told if r.metrics is not None and r.metrics.valid_share == 0.3]
    assert poor, "some candidates should have had too few valid images"
    assert all(not engine.reference.feasible(r) for r in poor)
    assert engine.reference.constraint_values(poor[0])[1] == pytest.approx(0.5)  # 0.8 - 0.3
    assert {p.candidate.candidate_id for p in engine.front()}.isdisjoint({r.candidate_id for r in poor})


def test_results_without_counts_are_not_refused() -> None:
    """Archives recorded before the counts existed replay as they did: the constraint is met."""
    engine = SearchEngine(make_spec())
    result = fake_evaluate(Candidate("0123456789abcdef", 1, CandidateSettings()))
    assert result.metrics is not None
    assert result.metrics.valid_share is None
    assert engine.reference.constraint_values(result)[1] == -1.0


def test_energy_compares_only_results_from_the_defaults_device() -> None:
    engine = SearchEngine(make_spec(algorithm={"generations": 3}))

    def evaluate(candidate: Candidate) -> EvaluationResult:
        result = fake_evaluate(candidate)
        odd = (candidate.settings.inference_steps or 0) % 3 == 0 and not candidate.baseline
        result.device = Device(name="NVIDIA A100" if odd else "NVIDIA H100")
        return result

    drive_engine(engine, evaluate)
    assert engine.reference.defaults_device == "NVIDIA H100"
    elsewhere = [r for r in engine.told if r.device is not None and r.device.name == "NVIDIA A100"]
    assert elsewhere
    assert all(not engine.reference.feasible(r) for r in elsewhere)
    assert all(p.device == "NVIDIA H100" for p in engine.front())
    assert engine.ledger.devices() == ["NVIDIA A100", "NVIDIA H100"]
    mixing = SearchEngine(make_spec(constraints={"sameDevice": False}))
    assert mixing.reference.constraint_values(elsewhere[0])[2] == -1.0


# ----------------------------------------------------------------------------- the validation stage


def test_a_search_with_validation_ends_by_evaluating_the_defaults_and_front_points() -> None:
    engine = SearchEngine(make_spec(validation=VALIDATION))
    run(engine)
    reference = SearchEngine(make_spec())
    run(reference)
    validated = engine.validation()
    assert [c.role for c, _ in validated][:2] == ["defaults", "knee"]
    assert len(validated) == 4  # the defaults and 3 front points
    assert {c.candidate_id for c, _ in validated[1:]} <= {p.candidate.candidate_id for p in reference.front()}
    assert all(result is not None and result.ok for _, result in validated)
    assert engine.outcome() == reference.outcome()  # the search's own end, after its validation
    assert engine.told == reference.told  # validation results stay apart from the search's


def test_validation_runs_while_the_engine_says_so() -> None:
    engine = SearchEngine(make_spec(validation=VALIDATION, algorithm={"generations": 1}))
    while engine.part is not Part.VALIDATION:
        for candidate in engine.ask():
            engine.tell(fake_evaluate(candidate))
    outcome = engine.outcome()
    assert (outcome.finished, outcome.reason) == (False, OutcomeReason.VALIDATING)
    pending = engine.ask()
    assert next(c.role for c in pending) == "defaults"
    assert engine.current_candidates() == pending
    with pytest.raises(ValueError, match="not being validated"):
        engine.tell(EvaluationResult.failed("ffffffffffffffff", "x"))
    for candidate in pending:
        engine.tell(fake_evaluate(candidate))
    assert engine.outcome().reason is OutcomeReason.GENERATIONS_COMPLETED


def test_an_archive_with_validation_records_replays() -> None:
    spec = make_spec(validation=VALIDATION)
    engine = SearchEngine(spec)
    run(engine)
    replayed = SearchEngine.replay(spec, [*engine.told, *engine.validation_told])
    assert replayed.validation() == engine.validation()
    assert replayed.outcome() == engine.outcome()
    midway = SearchEngine.replay(spec, [*engine.told, *engine.validation_told[:2]])
    assert midway.part is Part.VALIDATION
    assert len(midway.ask()) == len(engine.validation()) - 2


def test_the_loop_runs_validation_on_held_out_prompts_and_fresh_seeds() -> None:
    spec = make_spec(validation=VALIDATION | {"imagesPerPrompt": 4, "seed": 9})
    archive, executor = MemoryArchive(), FakeExecutor()
    loop = GenerationLoop(
        "s",
        spec,
        archive,
        executor,
        prompts=lambda: ["a portrait"],
        save_images=False,
        validation_prompts=lambda: list(VALIDATION["prompts"]["inline"]),
    )
    status = drive_loop(loop)
    task = executor.tasks[(4, 0)]  # the baseline, 3 generations, then validation
    assert task.prompts == VALIDATION["prompts"]["inline"]
    assert (task.images_per_prompt, task.candidates_per_shard, task.seeds.base) == (4, 1, 9)
    assert (task.seed_stream, task.per_prompt) == ("validation", True)
    validation_records = [r for r in archive.records if r.stage == "validation"]
    assert len(validation_records) == 4
    assert len({r.key for r in archive.records}) == len(archive.records)  # the defaults, twice, apart
    assert all(r.result.per_prompt is not None and len(r.result.per_prompt) == 3 for r in validation_records)
    validation = status["validation"]
    assert validation["complete"] is True
    assert [p["role"] for p in validation["points"]][:2] == ["defaults", "knee"]
    defaults, knee = validation["points"][0], validation["points"][1]
    assert defaults["objectives"]["GenderBias"]["changePercent"] == 0.0
    assert set(knee["objectives"]) == {"GenderBias", "EthnicBias", "Energy"}
    assert knee["wins"] + knee["pareto"] + knee["losses"] == 3
    assert 0 <= knee["signTestP"] <= 1  # what 3 prompts can support, said in the status itself
    assert "of 3 prompts" in knee["conclusion"]
    held = knee["objectives"]["Energy"]
    assert held["low"] <= held["value"] <= held["high"]
    assert status["phase"] == "Succeeded"


# ----------------------------------------------------------------------------- held-out statistics


def stats(female: int, male: int, white: int, asian: int, quality: float, joules: float) -> PromptStats:
    images = 10
    return PromptStats(
        images=images,
        human_images=images,
        female_images=female,
        male_images=male,
        white_images=white,
        asian_images=asian,
        quality_sum=quality * images,
        joules=joules * images,
    )


def test_pooled_values_follow_the_search_formulas_over_all_images() -> None:
    prompts = [stats(8, 2, 10, 0, 0.5, 100.0), stats(2, 8, 0, 10, 0.7, 300.0)]
    assert pooled_value(ObjectiveName.GENDER_BIAS, prompts) == pytest.approx(0.0)  # 10 female, 10 male
    assert pooled_value(ObjectiveName.GENDER_BIAS, prompts[:1]) == pytest.approx(0.6)
    assert pooled_value(ObjectiveName.ETHNIC_BIAS, prompts) == pytest.approx(0.5)  # white 1/2, asian 1/2, 0
    assert pooled_value(ObjectiveName.QUALITY, prompts) == pytest.approx(0.6)
    assert pooled_value(ObjectiveName.ENERGY, prompts) == pytest.approx(200.0)
    nobody = PromptStats(images=10, human_images=0, quality_sum=0.0, joules=1.0)
    assert pooled_value(ObjectiveName.GENDER_BIAS, [nobody]) == 1.0  # no evidence: the worst


def test_held_out_change_interval_and_per_prompt_counts() -> None:
    objectives = [Objective(name=ObjectiveName.GENDER_BIAS), Objective(name=ObjectiveName.ENERGY)]
    defaults = [stats(9, 1, 5, 5, 0.5, 100.0)] * 4
    point = [
        stats(5, 5, 5, 5, 0.5, 50.0),  # fairer and cheaper: a win
        stats(5, 5, 5, 5, 0.5, 150.0),  # fairer but dearer: Pareto
        stats(10, 0, 5, 5, 0.5, 150.0),  # worse in both: a loss
        stats(6, 4, 5, 5, 0.5, 100.0),  # fairer, as dear: a win
    ]
    result = held_out(objectives, point, defaults, seed=3)
    energy = result.objectives["Energy"]
    assert energy.value == pytest.approx(112.5)
    assert energy.change_percent == pytest.approx(12.5)
    assert energy.low <= energy.value <= energy.high
    assert energy.change_low is not None
    assert energy.change_high is not None
    assert energy.change_low <= 12.5 <= energy.change_high
    gender = result.objectives["GenderBias"]
    assert gender.value == pytest.approx(abs(26 / 40 - 0.5) + abs(14 / 40 - 0.5))
    assert gender.change_percent == pytest.approx((0.3 - 0.8) / 0.8 * 100)
    assert (result.wins, result.pareto, result.losses) == (2, 1, 1)
    tied = held_out(objectives, defaults, defaults, seed=3)
    assert (tied.wins, tied.pareto, tied.losses) == (0, 4, 0)  # equal everywhere: neither way
    assert held_out(objectives, point, defaults, seed=3) == result  # seeded: the same every time
    with pytest.raises(ValueError, match="same held-out prompts"):
        held_out(objectives, point[:2], defaults, seed=3)


def test_no_change_is_claimed_against_a_bias_the_defaults_have_no_evidence_for() -> None:
    objectives = [Objective(name=ObjectiveName.GENDER_BIAS), Objective(name=ObjectiveName.ENERGY)]
    faceless = PromptStats(images=10, human_images=0, quality_sum=5.0, joules=1000.0)
    result = held_out(objectives, [stats(5, 5, 5, 5, 0.5, 50.0)], [faceless], seed=1)
    assert result.objectives["GenderBias"].value == 0.0
    assert result.objectives["GenderBias"].change_percent is None  # the defaults' 1 is a rule, not a finding
    assert result.objectives["Energy"].change_percent == pytest.approx(-50.0)


def test_front_changes_leave_out_a_bias_the_defaults_have_no_evidence_for() -> None:
    def evaluate(candidate: Candidate) -> EvaluationResult:
        metrics = counted(candidate.settings, valid=0 if candidate.baseline else 10)
        return EvaluationResult.succeeded(candidate.candidate_id, metrics)

    engine = SearchEngine(make_spec(algorithm={"generations": 2}))
    drive_engine(engine, evaluate)
    reference = defaults_reference(engine)
    assert reference is not None
    assert set(reference) == {"Energy"}  # no mapped answer: neither bias is a measurement
    change = change_against(engine.front()[0].objectives, reference)
    assert change is not None
    assert set(change) == {"Energy"}


class Point:
    def __init__(self, name: str, a: float, b: float) -> None:
        self.name, self.objectives = name, {"A": a, "B": b}


def test_points_span_the_front_knee_and_extremes_first() -> None:
    front = [
        Point("p0", 0.0, 1.0),
        Point("p1", 0.1, 0.6),
        Point("p2", 0.4, 0.4),
        Point("p3", 0.7, 0.1),
        Point("p4", 1.0, 0.0),
    ]
    chosen = choose_points(front, lambda o: [o["A"], o["B"]], 4)
    assert [(role, point.name) for role, point in chosen] == [
        ("knee", "p2"),
        ("best A", "p0"),
        ("best B", "p4"),
        ("spread", "p1"),
    ]
    assert [p.name for _, p in choose_points(front, lambda o: [o["A"], o["B"]], 1)] == ["p2"]
    assert choose_points([], lambda o: [], 3) == []


def test_validation_records_are_keyed_apart_from_the_search() -> None:
    result = EvaluationResult.failed("0123456789abcdef", "x")
    search = ArchiveRecord(generation=3, result=result)
    validation = ArchiveRecord(generation=3, part=Part.VALIDATION, result=result)
    assert search.key != validation.key
    assert ArchiveRecord.from_line(validation.to_line()).stage == "validation"


def test_held_out_prompts_that_are_search_prompts_refuse_the_start_and_the_fix_resumes_it() -> None:
    """Prompts from ConfigMaps, which the API server's rule cannot read: checked when the search
    starts, a failure with its reason until they are fixed; nothing runs meanwhile."""
    held_out = ["held-out prompt one", "  PHOTO portrait of a software engineer that codes. "]
    spec = make_spec(validation=VALIDATION, algorithm={"generations": 1})
    archive, executor = MemoryArchive(), FakeExecutor()
    loop = GenerationLoop(
        "s",
        spec,
        archive,
        executor,
        prompts=lambda: ["Photo portrait of a Software Engineer that codes"],
        save_images=False,
        validation_prompts=lambda: list(held_out),
    )
    step = loop.step({})
    status = step.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert executor.launches == []
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "PromptsOverlap")
    assert failed["message"].startswith(
        'spec.validation.prompts: held-out prompt "  PHOTO portrait of a software engineer that codes. " '
        "is also a search prompt"
    )
    assert [e.reason for e in step.events] == ["PromptsOverlap"]
    assert not loop.step(status).events  # said once
    held_out.pop()
    final = drive_loop(loop)
    assert final["phase"] == "Succeeded"
    assert final["validation"]["complete"] is True


def test_held_out_prompts_changed_into_search_prompts_stop_the_validation_not_the_search() -> None:
    held_out = ["held-out prompt one", "held-out prompt two"]
    spec = make_spec(validation=VALIDATION, algorithm={"generations": 1})
    archive, executor = MemoryArchive(), FakeExecutor()
    loop = GenerationLoop(
        "s",
        spec,
        archive,
        executor,
        prompts=lambda: ["a portrait"],
        save_images=False,
        validation_prompts=lambda: list(held_out),
    )
    status: dict[str, object] = {}
    while not executor.launches or executor.launches[-1][0] < 1:
        status = loop.step(status).status.model_dump(mode="json", by_alias=True, exclude_none=True)
    held_out.append("A portrait!")  # the ConfigMap edited while the search ran
    for _ in range(20):
        status = loop.step(status).status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert status["phase"] == "Failed"
    assert 'held-out prompt "A portrait!"' in str(status["message"])
    searched = [r for r in archive.records if r.stage is None]
    assert {r.generation for r in searched} == {0, 1}  # the search itself is whole, and kept
    assert not [r for r in archive.records if r.stage == "validation"]
    held_out.pop()
    assert drive_loop(loop)["phase"] == "Succeeded"
