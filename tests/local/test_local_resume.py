"""`sustaindiffusion run` and `study run` interrupted at a point the run reports, then resumed: nothing
evaluated again, nothing archived lost. Apart from test_local_cli.py so that make runs the two files
as two suites beside each other (these searches are the local suite's longest)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from sustaindiffusion.local.store import RunStore
from tests.support.local_runs import (
    QUICKSTART,
    archived_stages,
    run_and_interrupt,
    spec_file,
    sustaindiffusion,
    worker_logged,
)
from tests.support.tiny import ensure_tiny_models


def test_an_interrupted_search_resumes_without_evaluating_anything_again(tmp_path: Path) -> None:
    """Ctrl-C while a worker of generation 1 loads the model, once the baseline is archived: the
    run stops its workers and exits 130; run again, it evaluates nothing twice."""
    spec = spec_file(tmp_path, generations=3)
    out = tmp_path / "out"
    stopped = run_and_interrupt(
        spec,
        out,
        lambda: len(archived_stages(out)) >= 1 and worker_logged(out, "loading the model", generation=1),
        "a worker of generation 1 loading the model",
    )
    assert stopped.returncode == 130, stopped.stderr
    assert "run the same command again to resume" in stopped.stderr
    assert stopped.workers_left == []
    before = [(r.stage, r.result.candidate_id) for r in RunStore(out).records()]
    assert before
    resumed = sustaindiffusion("run", str(spec), "--out", str(out))
    assert f"{out}: {len(before)} results replayed, none evaluated again" in resumed.stderr
    after = [
        (r.stage, r.result.candidate_id) for r in RunStore(out).records()
    ]  # validation re-runs the defaults
    assert after[: len(before)] == before
    assert not set(after[len(before) :]) & set(before)
    assert len(after) == len(set(after))
    assert json.loads((out / "status.json").read_text())["phase"] == "Succeeded"


def test_a_screened_search_with_more_evidence_resumes_mid_screening_and_keeps_everything(
    tmp_path: Path,
) -> None:
    """algorithm.screening: a first pass of 1 image per prompt (of 4), the rest for survivors; and
    algorithm.evidence: 2 more images per prompt for 2 front points from generation 2 on.
    Interrupted once the first screening results are archived, resumed without evaluating again."""
    spec = spec_file(tmp_path, generations=3)
    manifest = yaml.safe_load(spec.read_text())
    manifest["spec"]["algorithm"]["screening"] = {"imagesPerPrompt": 1, "confidence": 0.8}
    manifest["spec"]["algorithm"]["evidence"] = {"imagesPerPrompt": 2, "maxImagesPerPrompt": 8, "points": 2}
    spec.write_text(yaml.safe_dump(manifest))
    out = tmp_path / "out"
    stopped = run_and_interrupt(
        spec, out, lambda: "screen" in archived_stages(out), "a screening result archived"
    )
    assert stopped.returncode == 130, stopped.stderr
    assert stopped.workers_left == []
    before = [(r.stage, r.result.candidate_id) for r in RunStore(out).records()]
    assert ("screen", before[-1][1]) == before[-1]
    resumed = sustaindiffusion("run", str(spec), "--out", str(out))
    assert f"{out}: {len(before)} results replayed, none evaluated again" in resumed.stderr
    records = RunStore(out).records()
    after = [(r.stage, r.result.candidate_id) for r in records]
    assert after[: len(before)] == before
    keys = [r.key for r in records]  # a front point may get more evidence in each generation, once
    assert len(keys) == len(set(keys))
    screened = {r.result.candidate_id for r in records if r.stage == "screen"}
    rest = {r.result.candidate_id: r.result for r in records if r.stage == "rest"}
    assert screened
    assert set(rest) <= screened
    assert all(
        r.result.metrics is not None and r.result.metrics.images == 2 for r in records if r.stage == "screen"
    )
    assert all(r.metrics is not None and r.metrics.images == 6 for r in rest.values() if r.ok)  # images 1..3
    status = json.loads((out / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    screening = status["screening"]
    assert screening["screened"] == len(screened)
    assert screening["screenedOut"] == len(screened) - len(rest)
    assert screening["imagesSaved"] == 6 * screening["screenedOut"]
    evidence = [r.result for r in records if r.stage == "evidence"]
    assert evidence
    assert all(r.metrics is not None and r.metrics.images == 4 for r in evidence if r.ok)
    front = {entry["candidateId"]: entry for entry in status["front"]}
    assert all(front[c]["images"] in (8, 12, 16) for c in rest if c in front)  # all 8, and more evidence
    assert any(entry["images"] > 8 for entry in front.values())
    artifacts = out / "artifacts"
    sharpened = evidence[0].candidate_id
    assert list(artifacts.glob(f"generation-*/{sharpened}/images-from-004.jsonl"))
    assert "screening:" in resumed.stdout + resumed.stderr


def test_a_two_arm_two_run_study_runs_locally_and_resumes(tmp_path: Path) -> None:
    arms = tmp_path / "arms"
    arms.mkdir()
    (arms / "tiny-models").symlink_to(ensure_tiny_models())
    base = yaml.safe_load(QUICKSTART.read_text())
    base["spec"]["algorithm"] |= {"populationSize": 4, "generations": 1}
    base["spec"]["validation"]["points"] = 1  # the knee, on 2 held-out prompts
    for name, objectives in (("biases", ["GenderBias", "EthnicBias"]), ("energy", ["Energy"])):
        manifest = yaml.safe_load(yaml.safe_dump(base))
        manifest["metadata"]["name"] = name
        manifest["spec"]["objectives"] = [{"name": objective} for objective in objectives]
        (arms / f"{name}.yaml").write_text(yaml.safe_dump(manifest))
    out = tmp_path / "out"
    sustaindiffusion("study", "run", str(arms), "--runs", "2", "--study", "tiny", "--out", str(out))
    candidates = {}
    for arm in ("biases", "energy"):
        for run in (0, 1):
            directory = out / arm / f"run-{run}"
            status = json.loads((directory / "status.json").read_text())
            assert status["phase"] == "Succeeded", (arm, run)
            records = RunStore(directory).records()
            candidates[arm, run] = {r.result.candidate_id for r in records if r.generation == 1}
    assert candidates["biases", 0] != candidates["biases", 1]  # seeds 0 and 1
    assert candidates["biases", 0] == candidates["energy", 0]  # the same seed asks the same first population
    again = sustaindiffusion("study", "run", str(arms), "--runs", "2", "--study", "tiny", "--out", str(out))
    assert again.stderr.count("none evaluated again") == 4
    assert f"study tiny: 4 runs complete in {out}" in again.stderr
    # The analysis of the study (tiny random models: the numbers mean nothing, the machinery does).
    analysed = sustaindiffusion("analyze", str(out), "--reference", "biases")
    assert "4 runs of 2 arms" in analysed.stdout
    with (out / "analysis" / "arms.csv").open() as handle:
        arms_table = {row["arm"]: row for row in csv.DictReader(handle)}
    assert set(arms_table) == {"defaults", "biases", "energy"}
    assert all(arms_table[arm]["runs"] == "2" for arm in ("biases", "energy"))
    assert float(arms_table["energy"]["gpu_kwh_per_image_mean"]) >= 0
    with (out / "analysis" / "tests.csv").open() as handle:
        tests = list(csv.DictReader(handle))
    assert {row["arm"] for row in tests} == {"energy"}
    assert all(row["test"] == "wilcoxon" for row in tests)  # both arms ran seeds 0 and 1
    assert {row["measure"] for row in tests} >= {"gender_bias", "ethnic_bias", "hypervolume"}
    with (out / "analysis" / "held-out.csv").open() as handle:
        held_out = {row["arm"]: row for row in csv.DictReader(handle)}
    assert set(held_out) == {"biases", "energy"}
    assert all(
        row["role"] == "knee" and row["runs"] == "2" and row["prompts"] == "4" for row in held_out.values()
    )
    assert "knee" in analysed.stdout  # the held-out table, printed
    # Held out first: the changes against the defaults, with intervals, then what the per-prompt
    # counts support; the in-sample arm table after them, labelled so.
    shown = analysed.stdout
    assert shown.index("held out: change against the defaults") < shown.index("in-sample: 4 runs of 2 arms")
    assert shown.index("held out, prompt by prompt") < shown.index("in-sample: 4 runs of 2 arms")
    assert "biases, knee: " in shown
    assert "not significant at 5%" in shown or "beyond chance" in shown or "no prompt decided" in shown
    with (out / "analysis" / "held-out-changes.csv").open() as handle:
        changes = list(csv.DictReader(handle))
    knees = {(row["arm"], row["objective"]) for row in changes if row["role"] == "knee"}
    assert knees == {("biases", "GenderBias"), ("biases", "EthnicBias"), ("energy", "Energy")}
    for row in changes:
        if row["held_out_change_percent"]:
            assert float(row["held_out_low"]) <= float(row["held_out_high"])
    assert "\\toprule" in (out / "analysis" / "arms.tex").read_text()
    assert "box_plots.png" in analysed.stderr
    assert "<h2>In-sample: box plots over runs</h2>" in (out / "analysis" / "index.html").read_text()
    print(analysed.stdout)
