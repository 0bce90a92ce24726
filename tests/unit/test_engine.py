"""The search engine: encoding, determinism, replay after a crash at every point, failures,
constraints, duplicates, hypervolume and termination; reads that change nothing, and a generation
composed of the phases it is given."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pymoo.core.mixed import MixedVariableSampling
from pymoo.core.problem import Problem

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.encoding import SearchSpaceEncoding
from sustaindiffusion.search.engine import ReplayMismatchError, SearchEngine
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.outcome import Outcome, OutcomeReason, OutcomeState
from sustaindiffusion.search.phases import evidence, screening
from sustaindiffusion.search.phases.base import Context
from sustaindiffusion.search.reference import DEFAULTS_BASELINE
from tests.support.engine_runs import make_spec, run
from tests.support.fake_evaluator import fake_evaluate, fake_metrics
from tests.support.phases import planned_result

# ----------------------------------------------------------------------------- encoding


def test_encoding_has_one_bit_per_keyword_and_excludes_fixed_variables() -> None:
    spec = make_spec()
    variables = SearchSpaceEncoding(spec.search_space).variables()
    assert sum(1 for name in variables if name.startswith("pos")) == 20
    assert sum(1 for name in variables if name.startswith("neg")) == 25
    assert {"steps", "guidance", "weight"} <= set(variables)

    fixed = make_spec(
        searchSpace={"inferenceSteps": {"fixed": 28}, "negativeKeywords": {"fixed": ["lowres"]}}
    )
    encoding = SearchSpaceEncoding(fixed.search_space)
    names = set(encoding.variables())
    assert "steps" not in names
    assert not any(name.startswith("neg") for name in names)
    settings = encoding.decode(encoding.encode(CandidateSettings(guidance_scale=3.5, prompt_weight=2)))
    assert settings.inference_steps == 28
    assert settings.negative_keywords == ["lowres"]


def test_encoding_round_trips() -> None:
    """To the canonical form; the legacy form (archives begun before it) to the settings as given."""
    spec = make_spec()
    encoding = SearchSpaceEncoding(spec.search_space)
    legacy = SearchSpaceEncoding(spec.search_space, canonical=False)
    pool_pos = spec.search_space.positive_keywords.pool or []
    pool_neg = spec.search_space.negative_keywords.pool or []
    rng = np.random.default_rng(0)
    for _ in range(200):
        settings = CandidateSettings(
            inference_steps=int(rng.integers(25, 81)),
            guidance_scale=round(float(rng.integers(0, 201)) * 0.1, 1),
            positive_keywords=[k for k in pool_pos if rng.random() < 0.5],
            negative_keywords=[k for k in pool_neg if rng.random() < 0.5],
            prompt_weight=int(rng.integers(1, 6)),
        )
        decoded = encoding.decode(encoding.encode(settings))
        assert decoded == settings.canonical()
        assert legacy.decode(legacy.encode(settings)) == settings


def test_guidance_grid_covers_both_ends_without_float_drift() -> None:
    encoding = SearchSpaceEncoding(make_spec().search_space)
    bounds = encoding.variables()["guidance"].bounds
    assert bounds == (0, 200)
    assert encoding.guidance_value(0) == 0.0
    assert encoding.guidance_value(3) == 0.3
    assert encoding.guidance_value(200) == 20.0


def test_every_keyword_is_reachable_alone() -> None:
    spec = make_spec()
    encoding = SearchSpaceEncoding(spec.search_space)
    for keyword in spec.search_space.positive_keywords.pool or []:
        settings = CandidateSettings(
            inference_steps=30, guidance_scale=5.0, positive_keywords=[keyword], prompt_weight=1
        )
        assert encoding.decode(encoding.encode(settings)).positive_keywords == [keyword]
    for keyword in spec.search_space.negative_keywords.pool or []:
        settings = CandidateSettings(
            inference_steps=30, guidance_scale=5.0, negative_keywords=[keyword], prompt_weight=1
        )
        assert encoding.decode(encoding.encode(settings)).negative_keywords == [keyword]


def test_every_keyword_has_the_same_prior_probability() -> None:
    """Initial sampling selects each keyword independently with probability 1/2 (the research code's
    unpadded binary strings favoured the first keyword and could not reach some at all)."""
    spec = make_spec()
    encoding = SearchSpaceEncoding(spec.search_space)
    problem = Problem(vars=encoding.variables(), n_obj=1)
    samples = MixedVariableSampling()(problem, 4000, random_state=np.random.default_rng(1))
    selected = {k: 0 for k in (spec.search_space.positive_keywords.pool or [])}
    for individual in samples:
        for keyword in encoding.decode(individual.X).positive_keywords:
            selected[keyword] += 1
    frequencies = np.array(list(selected.values())) / 4000
    # 4000 Bernoulli(0.5) draws: standard deviation 0.0079; allow five of them.
    assert np.all(np.abs(frequencies - 0.5) < 0.04), frequencies


def test_weight_is_irrelevant_without_keywords() -> None:
    encoding = SearchSpaceEncoding(make_spec().search_space)
    genome = encoding.encode(CandidateSettings(inference_steps=30, guidance_scale=2.0, prompt_weight=4))
    genome["weight"] = 4
    assert encoding.decode(genome).prompt_weight == 0


def test_canonical_settings_drop_what_cannot_change_the_images() -> None:
    keywords = {"positive_keywords": ["photograph"], "negative_keywords": ["lowres", "sketch"]}
    for guidance in (0.0, 0.5, 1.0):  # classifier-free guidance off: no negative prompt is used
        canonical = CandidateSettings(guidance_scale=guidance, prompt_weight=3, **keywords).canonical()
        assert canonical.negative_keywords == []
        assert canonical.positive_keywords == ["photograph"]
        assert canonical.prompt_weight == 3
    for guided in (1.1, 7.0, None):  # on (absent: the pipeline's default, above 1)
        settings = CandidateSettings(guidance_scale=guided, prompt_weight=3, **keywords)
        assert settings.canonical() == settings
    only_negative = CandidateSettings(guidance_scale=0.5, negative_keywords=["lowres"], prompt_weight=4)
    assert only_negative.canonical() == CandidateSettings(guidance_scale=0.5)  # no keyword left to weigh
    assert CandidateSettings(prompt_weight=2).canonical().prompt_weight == 0


def test_equivalent_settings_share_one_id_and_the_canonical_form_is_stable() -> None:
    rng = np.random.default_rng(3)
    pool = ["photograph", "lowres", "sketch", "gentle"]
    for _ in range(300):
        settings = CandidateSettings(
            inference_steps=int(rng.integers(1, 50)),
            guidance_scale=[None, 0.0, 1.0, 1.5, 7.0][int(rng.integers(0, 5))],
            positive_keywords=[k for k in pool[:2] if rng.random() < 0.5],
            negative_keywords=[k for k in pool[2:] if rng.random() < 0.5],
            prompt_weight=int(rng.integers(0, 6)),
        )
        canonical = settings.canonical()
        assert canonical.canonical() == canonical
        assert canonical.positive_prompt("A") == settings.positive_prompt("A")  # the same prompt
        guided = settings.guidance_scale is None or settings.guidance_scale > 1
        if guided:
            assert canonical.negative_prompt() == settings.negative_prompt()
        if canonical != settings:
            assert canonical.candidate_id() != settings.candidate_id()
    negatives_only_differ = [
        CandidateSettings(inference_steps=4, guidance_scale=1.0, negative_keywords=negative, prompt_weight=2)
        for negative in ([], ["lowres"], ["lowres", "sketch"])
    ]
    assert len({s.canonical().candidate_id() for s in negatives_only_differ}) == 1


def test_prompt_texts_carry_weight_marks() -> None:
    settings = CandidateSettings(
        positive_keywords=["photograph", "film grain"], negative_keywords=["lowres"], prompt_weight=2
    )
    assert (
        settings.positive_prompt("A portrait that codes.")
        == "A portrait that codes, (photograph)++, (film grain)++"
    )
    assert settings.negative_prompt() == "(lowres)++"
    assert CandidateSettings().positive_prompt("A portrait.") == "A portrait."
    assert (
        CandidateSettings(positive_keywords=["gentle"]).positive_prompt("A portrait") == "A portrait, gentle"
    )


# ----------------------------------------------------------------------------- engine


def test_generation_zero_evaluates_defaults_and_user_baselines() -> None:
    spec = make_spec(baselines=[{"name": "fast", "inferenceSteps": 20, "guidanceScale": 4.0}])
    engine = SearchEngine(spec)
    batch = engine.ask()
    assert [c.baseline for c in batch] == [DEFAULTS_BASELINE, "fast"]
    assert batch[0].settings == CandidateSettings()
    assert all(c.generation == 0 for c in batch)
    for candidate in batch:
        engine.tell(fake_evaluate(candidate))
    assert engine.generation == 1
    defaults_quality = fake_metrics(CandidateSettings()).quality
    assert engine.quality_threshold == pytest.approx(0.95 * defaults_quality)
    assert len(engine.ask()) == 8


def test_the_search_is_deterministic_for_a_seed() -> None:
    first, second = run(SearchEngine(make_spec())), run(SearchEngine(make_spec()))
    assert first == second
    other_seed = run(SearchEngine(make_spec(algorithm={"seed": 8})))
    assert other_seed != first


def test_the_search_is_deterministic_across_interpreters() -> None:
    """A separate interpreter with another hash seed asks the same candidates (no hidden global state)."""
    script = (
        "import json; from tests.support.engine_runs import make_spec, run;"
        "from sustaindiffusion.search.engine import SearchEngine;"
        "print(json.dumps(run(SearchEngine(make_spec()))))"
    )
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    output = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env
    )
    assert json.loads(output.stdout) == run(SearchEngine(make_spec()))


def test_replay_after_a_crash_at_every_point_reaches_the_same_end() -> None:
    spec = make_spec()
    reference = SearchEngine(spec)
    evaluated = run(reference)
    archive = list(reference.told)
    assert len(archive) == len(evaluated)
    for crash_point in range(len(archive) + 1):
        resumed = SearchEngine.replay(spec, archive[:crash_point])
        evaluated_after = run(resumed)
        # Nothing finished is evaluated again, nothing is skipped.
        assert evaluated_after == evaluated[crash_point:], f"crash after {crash_point} results"
        assert [r.candidate_id for r in resumed.told] == [r.candidate_id for r in archive]
        assert [p.candidate.candidate_id for p in resumed.front()] == [
            p.candidate.candidate_id for p in reference.front()
        ]
        assert resumed.hypervolume_history == reference.hypervolume_history


def test_replay_refuses_an_archive_of_another_search() -> None:
    archive = SearchEngine(make_spec())
    run(archive)
    with pytest.raises(ReplayMismatchError, match="belongs to another search"):
        SearchEngine.replay(make_spec(algorithm={"seed": 99}), archive.told)


def test_duplicates_are_evaluated_once() -> None:
    engine = SearchEngine(make_spec(algorithm={"generations": 6}))
    evaluated = run(engine)
    assert len(evaluated) == len(set(evaluated))


def test_equivalent_settings_are_evaluated_once_and_fill_no_population_slot_twice() -> None:
    """Guidance fixed at 1 switches classifier-free guidance off: negative keywords cannot change
    the images. Legacy ids evaluate such equivalents again; canonical ids never do, and NSGA-II
    treats equivalent genomes as duplicates, so each generation's population is distinct images."""
    spec = make_spec(
        searchSpace={"guidanceScale": {"fixed": 1.0}, "inferenceSteps": {"min": 2, "max": 4}},
        algorithm={"generations": 5, "populationSize": 10},
    )

    def image_ids(engine: SearchEngine, evaluated: list[str]) -> list[str]:
        return [engine.candidate(i).settings.canonical().candidate_id() for i in evaluated]

    legacy = SearchEngine(spec, canonical_ids=False)
    legacy_ids = image_ids(legacy, run(legacy))
    assert len(set(legacy_ids)) < len(legacy_ids)  # the same images generated more than once

    canonical, populations = SearchEngine(spec), []
    evaluated: list[str] = []
    while not canonical.outcome().finished:
        batch = canonical.ask()
        if canonical.generation > 0 and canonical.population is not None:
            populations.append(list(canonical.population.genome_ids))
        for candidate in batch:
            evaluated.append(candidate.candidate_id)
            canonical.tell(fake_evaluate(candidate))
    assert len(populations) == 5
    assert all(len(population) == 10 for population in populations)
    assert image_ids(canonical, evaluated) == evaluated  # every candidate is its canonical form
    assert len(set(evaluated)) == len(evaluated)
    assert all(not canonical.candidate(i).settings.negative_keywords for i in evaluated)
    assert all(len(set(population)) == len(population) for population in populations)


def test_failures_are_infeasible_and_the_search_goes_on() -> None:
    def fails(candidate: Candidate) -> bool:
        return (
            candidate.generation > 0
            and candidate.settings.inference_steps is not None
            and candidate.settings.inference_steps > 60
        )

    engine = SearchEngine(make_spec(algorithm={"generations": 4}))
    run(engine, fails)
    failed = [r for r in engine.told if not r.ok]
    assert failed, "the fake evaluator should have failed some candidates"
    assert all(r.reason == "CUDA out of memory (simulated)" for r in failed)
    assert engine.failures == len(failed)
    front_ids = {p.candidate.candidate_id for p in engine.front()}
    assert front_ids
    assert not front_ids & {r.candidate_id for r in failed}
    assert engine.outcome() == Outcome(
        OutcomeState.SUCCEEDED, OutcomeReason.GENERATIONS_COMPLETED, "completed 4 generations"
    )


def test_the_quality_constraint_keeps_low_quality_out_of_the_front() -> None:
    engine = SearchEngine(
        make_spec(constraints={"quality": {"tolerance": 0.0}}, algorithm={"generations": 4})
    )
    run(engine)
    assert engine.quality_threshold is not None
    told_ids = {r.candidate_id for r in engine.told}
    infeasible = [
        r for r in engine.told if r.metrics is not None and r.metrics.quality < engine.quality_threshold
    ]
    assert infeasible, "some candidates should fall below the defaults' quality"
    front = engine.front()
    assert front
    assert all(p.metrics.quality >= engine.quality_threshold for p in front)
    assert {p.candidate.candidate_id for p in front} <= told_ids


def test_front_is_non_dominated() -> None:
    engine = SearchEngine(make_spec(algorithm={"generations": 4}))
    run(engine)
    values = [list(p.objectives.values()) for p in engine.front()]
    for i, a in enumerate(values):
        for j, b in enumerate(values):
            if i != j:
                assert not (all(x <= y for x, y in zip(b, a, strict=True)) and b != a), (a, b)


def test_hypervolume_never_decreases() -> None:
    engine = SearchEngine(make_spec(algorithm={"generations": 8, "populationSize": 12}))
    run(engine)
    history = engine.hypervolume_history
    assert len(history) == 8
    assert history[-1] > 0
    assert all(later >= earlier - 1e-12 for earlier, later in itertools.pairwise(history))


def test_baseline_failure_ends_the_search_with_the_reason() -> None:
    engine = SearchEngine(make_spec())
    run(engine, fails=lambda c: c.baseline == DEFAULTS_BASELINE)
    outcome = engine.outcome()
    assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, OutcomeReason.BASELINE_FAILED)
    assert "default settings could not be evaluated" in outcome.message
    assert "simulated" in outcome.message
    assert engine.ask() == []
    assert engine.front() == []
    assert not engine.reference.fixed


def test_evaluation_budget_is_never_exceeded() -> None:
    engine = SearchEngine(make_spec(algorithm={"generations": 50, "termination": {"maxEvaluations": 30}}))
    run(engine)
    assert engine.evaluations <= 30
    assert engine.outcome().reason is OutcomeReason.EVALUATION_BUDGET
    assert engine.outcome().message.startswith("evaluation budget")


def test_energy_budget_stops_the_search() -> None:
    engine = SearchEngine(
        make_spec(algorithm={"generations": 50, "termination": {"energyBudgetJoules": 5000}})
    )
    run(engine)
    assert engine.outcome().reason is OutcomeReason.ENERGY_BUDGET
    assert engine.outcome().state is OutcomeState.SUCCEEDED
    assert engine.total_energy_joules >= 5000


def test_hypervolume_stagnation_stops_the_search() -> None:
    spec = make_spec(
        algorithm={
            "generations": 200,
            "termination": {"hypervolumeStagnation": {"generations": 3, "tolerance": 0.01}},
        }
    )
    engine = SearchEngine(spec)
    run(engine)
    assert engine.outcome().reason is OutcomeReason.HYPERVOLUME_STAGNATION
    assert engine.outcome().message.startswith("hypervolume stagnation")
    assert engine.generation < 200


def test_tell_rejects_unknown_and_repeated_results() -> None:
    engine = SearchEngine(make_spec(baselines=[{"name": "fast", "inferenceSteps": 20}]))
    candidate = engine.ask()[0]
    with pytest.raises(ValueError, match="not pending"):
        engine.tell(EvaluationResult.failed("0000000000000000", "x"))
    engine.tell(fake_evaluate(candidate))
    with pytest.raises(ValueError, match="already has a result"):
        engine.tell(fake_evaluate(candidate))


def test_current_candidates_exclude_results_from_earlier_generations() -> None:
    """A generation's task holds only what it evaluates, before and after its results arrive."""
    engine = SearchEngine(make_spec(algorithm={"generations": 8}))
    seen: set[str] = set()
    while not engine.outcome().finished:
        batch = engine.current_candidates()
        ids = {c.candidate_id for c in batch}
        assert not ids & seen, "a candidate evaluated earlier is in a later task"
        assert {c.candidate_id for c in engine.ask()} == ids
        first = batch[0]
        engine.tell(fake_evaluate(first))
        if not engine.outcome().finished and engine.generation == first.generation:
            assert {c.candidate_id for c in engine.current_candidates()} == ids  # stable mid-generation
        for candidate in engine.ask():
            engine.tell(fake_evaluate(candidate))
        seen |= ids


def test_too_many_failures_fail_the_search_and_a_higher_limit_lets_it_go_on() -> None:
    spec = make_spec(execution={"maxFailedCandidates": 2})
    engine = SearchEngine(spec)
    run(engine, fails=lambda c: c.generation > 0)  # every search candidate fails
    outcome = engine.outcome()
    assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, OutcomeReason.TOO_MANY_FAILURES)
    assert "more than spec.execution.maxFailedCandidates (2)" in outcome.message
    assert engine.ask() == []
    assert engine.failures == len(engine.told) - 1  # the whole first generation failed, then it stopped
    assert engine.pending() == []
    # A replay of the archive reaches the same outcome and asks nothing more.
    replayed = SearchEngine.replay(spec, engine.told)
    assert replayed.outcome() == outcome
    assert replayed.ask() == []
    # Raising the limit (the field may change while a search runs) lets the same archive go on.
    relaxed_spec = make_spec(execution={"maxFailedCandidates": 1000})
    relaxed = SearchEngine.replay(relaxed_spec, engine.told)
    assert relaxed.outcome().state is OutcomeState.RUNNING
    run(relaxed, fails=lambda c: c.generation > 0)
    assert relaxed.outcome().reason is OutcomeReason.GENERATIONS_COMPLETED


def test_results_of_a_generation_that_failed_midway_can_still_be_told() -> None:
    """An operator ingests a shard's report whole: the results after the failure limit count too."""
    engine = SearchEngine(make_spec(execution={"maxFailedCandidates": 2}))
    for candidate in engine.ask():  # generation 0: the defaults
        engine.tell(fake_evaluate(candidate))
    batch = engine.ask()
    assert engine.generation == 1
    assert len(batch) > 3
    for candidate in batch[:3]:
        engine.tell(fake_evaluate(candidate, fails=lambda _: True))
    assert engine.outcome().reason is OutcomeReason.TOO_MANY_FAILURES
    rest = engine.pending()
    assert [c.candidate_id for c in rest] == [c.candidate_id for c in batch[3:]]
    for candidate in rest:
        engine.tell(fake_evaluate(candidate))
    assert engine.pending() == []  # no next generation is started for a failed search
    assert engine.outcome().reason is OutcomeReason.TOO_MANY_FAILURES


def test_baseline_failure_wins_over_the_failure_limit() -> None:
    engine = SearchEngine(make_spec(execution={"maxFailedCandidates": 0}))
    run(engine, fails=lambda c: c.baseline == DEFAULTS_BASELINE)
    assert engine.outcome().reason is OutcomeReason.BASELINE_FAILED


def test_replay_drops_exact_repeats_of_a_told_result() -> None:
    spec = make_spec()
    reference = SearchEngine(spec)
    run(reference)
    told = reference.told
    doubled = [told[0], told[0], *told[1:5], told[4], *told[5:]]
    replayed = SearchEngine.replay(spec, doubled)
    assert replayed.told == told
    assert replayed.outcome() == reference.outcome()


# ----------------------------------------------------------------------------- phases


def screened_evidence_spec() -> SustainSearchSpec:
    return make_spec(
        prompts={"inline": ["p"], "imagesPerPrompt": 8},
        algorithm={
            "generations": 4,
            "screening": {"imagesPerPrompt": 2},
            "evidence": {"imagesPerPrompt": 2, "maxImagesPerPrompt": 12, "points": 2},
        },
    )


def snapshot(engine: SearchEngine) -> tuple[object, ...]:
    return (
        engine.generation,
        engine.part,
        engine.population,
        engine.plan() if not engine.outcome().finished else None,
        engine.pending(),
        engine.current_candidates(),
        engine.outcome(),
        list(engine.told),
        [p.candidate.candidate_id for p in engine.front()],
        engine.total_energy_joules,
        list(engine.hypervolume_history),
    )


def test_reading_the_engine_never_changes_it_and_the_tell_that_ends_a_phase_starts_the_next() -> None:
    engine = SearchEngine(screened_evidence_spec())
    parts = []
    while not engine.outcome().finished:
        before = snapshot(engine)
        engine.ask()
        engine.screening_tally()
        engine.validation()
        assert snapshot(engine) == before
        generation, part = engine.generation, engine.part
        parts.append((generation, part))
        plan = engine.plan()
        for candidate in engine.ask():
            engine.tell(planned_result(plan, candidate), plan.part)
        if engine.generation != generation and not engine.outcome().finished:
            assert engine.population is not None  # the next generation was asked by that tell
            assert all(c.generation == engine.generation for c in engine.population.candidates)
    assert (2, Part.EVIDENCE) in parts
    assert {(1, Part.SCREEN), (1, Part.REST)} <= set(parts)


def test_a_generation_is_the_phases_it_is_composed_of() -> None:
    spec = screened_evidence_spec()
    offered: list[int] = []

    def observer(context: Context) -> None:  # a phase type with nothing to do: it only looks
        offered.append(context.generation)

    default, composed = (
        SearchEngine(spec),
        SearchEngine(spec, phases=(evidence.start, screening.start, observer)),
    )
    assert run_parts(default) == run_parts(composed)
    assert offered == [1, 2, 3, 4]
    without_evidence = SearchEngine(spec, phases=(screening.start,))
    assert Part.EVIDENCE not in {part for part, _ in run_parts(without_evidence)}


def run_parts(engine: SearchEngine) -> list[tuple[Part, str]]:
    told = []
    while not engine.outcome().finished:
        plan = engine.plan()
        for candidate in engine.ask():
            engine.tell(planned_result(plan, candidate))
            told.append((plan.part, candidate.candidate_id))
    return told
