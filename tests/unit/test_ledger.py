"""The ledger: what the search knows about a candidate, every told result under its archive key, and
totals that bill every image once (finals, held-out results, and first passes still without one)."""

from __future__ import annotations

import math

import pytest

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.results import Device, EvaluationResult, Screened
from sustaindiffusion.api.task import Part
from sustaindiffusion.search.ledger import Candidate, Ledger
from sustaindiffusion.search.records import ArchiveRecord
from tests.support.fake_evaluator import fake_evaluate

A, B, C = (Candidate(f"{i:016x}", 1, CandidateSettings(inference_steps=10 + i)) for i in range(3))


def test_a_candidate_is_remembered_as_it_first_appeared_and_joins_the_search_once() -> None:
    ledger = Ledger()
    assert ledger.remember(A) is A
    assert ledger.remember(Candidate(A.candidate_id, 5, A.settings)) is A
    ledger.join_search(B.candidate_id, 2)
    ledger.join_search(A.candidate_id, 3)
    ledger.join_search(B.candidate_id, 4)
    assert ledger.search_ids() == [B.candidate_id, A.candidate_id]
    assert ledger.search_ids(before=3) == [B.candidate_id]


def test_told_results_are_kept_under_the_keys_the_archive_gives_their_records() -> None:
    ledger = Ledger()
    for part, generation in ((Part.SCREEN, 2), (Part.REST, 2), (Part.EVIDENCE, 4), (Part.WHOLE, 1)):
        result = EvaluationResult.failed(A.candidate_id, f"{part.value} {generation}")
        ledger.tell(part, generation, result)
        record = ArchiveRecord(generation=generation, part=part, result=result)
        assert ledger.told_as(record.part, record.generation, record.candidate_id) == result
    assert ledger.told_as(Part.EVIDENCE, 5, A.candidate_id) is None  # evidence is once per generation
    assert ledger.told_as(Part.SCREEN, 9, A.candidate_id) is not None  # screening, once per candidate


def test_a_sharpened_result_keeps_its_place_and_adds_its_images() -> None:
    ledger = Ledger()
    for candidate in (A, B):
        ledger.record(fake_evaluate(candidate), 1, 10)
    sharper = fake_evaluate(A).model_copy(update={"reason": "sharper"})
    ledger.sharpen(sharper, 5)
    assert ledger.told == [sharper, ledger.result(B.candidate_id)]
    assert ledger.images_per_prompt(A.candidate_id) == 15
    assert ledger.evaluated_in(A.candidate_id) == 1


def test_totals_bill_finals_held_out_results_and_first_passes_not_yet_final() -> None:
    ledger = Ledger()
    whole, first_pass, held_out = fake_evaluate(A), fake_evaluate(B), fake_evaluate(C)
    ledger.record(whole, 1, 10)
    ledger.tell(Part.SCREEN, 2, first_pass)  # its rest still runs
    ledger.record_validation(held_out.model_copy(update={"device": Device(name="H100")}), 3)
    gpu, cpu = ledger.energy_joules()
    metrics = [r.metrics for r in (whole, first_pass, held_out) if r.metrics is not None]
    assert gpu == pytest.approx(math.fsum(m.gpu_joules for m in metrics))
    assert cpu == pytest.approx(math.fsum(m.cpu_joules for m in metrics))
    ledger.record(first_pass.model_copy(update={"screened": Screened.OUT}), 2, 3)  # now final
    assert ledger.energy_joules() == (gpu, cpu)  # billed once
    assert ledger.devices() == ["H100"]
    assert ledger.evaluations == 2


def test_failures_count_failed_and_incomplete_candidates() -> None:
    ledger = Ledger()
    ledger.record(EvaluationResult.failed(A.candidate_id, "OOM"), 1, 10)
    ledger.record(fake_evaluate(B).model_copy(update={"screened": Screened.INCOMPLETE}), 1, 3)
    ledger.record(fake_evaluate(C).model_copy(update={"screened": Screened.OUT}), 1, 3)
    assert ledger.failures == 2
    tally = ledger.screening_tally(images_per_prompt=12, screened_per_prompt=3)
    assert (tally.screened, tally.screened_out, tally.incomplete) == (2, 1, 1)
    assert tally.images_saved == 4 * 9 // 3  # the screened-out candidate's 4 images stood for 12 + 4
