"""`sustaindiffusion` end to end on the tiny models: run, resume after an interruption, report,
export a profile, and validate with the API server's words."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet
import pytest
import yaml
from PIL import Image

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.local.store import RunStore
from tests.support.local_runs import archived_stages, run_and_interrupt, worker_logged
from tests.support.spec_cases import INVALID_CASES
from tests.support.tiny import ensure_tiny_models

CLI = [sys.executable, "-m", "sustaindiffusion.local.cli"]
QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"


def spec_file(directory: Path, generations: int = 2) -> Path:
    """A small search whose model paths are relative to the spec file, as in examples/quickstart.yaml."""
    (directory / "tiny-models").symlink_to(ensure_tiny_models())
    manifest = yaml.safe_load(QUICKSTART.read_text())
    manifest["spec"]["algorithm"] |= {"populationSize": 4, "generations": generations}
    manifest["spec"]["execution"]["candidatesPerPod"] = 2
    path = directory / "search.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def sustaindiffusion(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("local")
    out = directory / "out"
    sustaindiffusion("run", str(spec_file(directory)), "--out", str(out))
    return out


def test_a_local_search_completes_and_records_everything(finished_run: Path) -> None:
    status = json.loads((finished_run / "status.json").read_text())
    records = [r for r in RunStore(finished_run).records() if r.stage is None]  # the search's own
    assert status["phase"] == "Succeeded"
    assert status["generationProgress"] == "2/2"
    assert status["evaluations"]["succeeded"] + status["evaluations"]["failed"] == len(records)
    assert {r.generation for r in records} == {0, 1, 2}
    assert len({r.result.candidate_id for r in records}) == len(records)
    assert status["front"]
    assert all(entry["validShare"] is not None for entry in status["front"])
    for entry in status["front"]:  # the tiny VQA model's answers map to groups: both biases have counts
        assert entry["images"] > 0
        for name in ("GenderBias", "EthnicBias"):
            interval = entry["intervals"][name]
            assert interval["low"] <= entry["objectives"][name] <= interval["high"]


def test_the_front_is_validated_on_held_out_prompts_and_seeds(finished_run: Path) -> None:
    status = json.loads((finished_run / "status.json").read_text())
    validation = status["validation"]
    assert validation["complete"]
    assert validation["prompts"] == 2
    assert validation["imagesPerPrompt"] == 2
    roles = [point["role"] for point in validation["points"]]
    assert roles[0] == "defaults"
    assert 1 < len(roles) <= 4  # the defaults and up to three front points
    front_ids = {entry["candidateId"] for entry in status["front"]}
    for point in validation["points"][1:]:
        assert point["candidateId"] in front_ids
        assert point["wins"] + point["pareto"] + point["losses"] == 2  # one verdict per held-out prompt
        for name, held in point["objectives"].items():
            assert held["low"] <= held["value"] <= held["high"], name
            assert name in point["inSample"]
    validation_prompts = yaml.safe_load(QUICKSTART.read_text())["spec"]["validation"]["prompts"]["inline"]
    held_out = [r for r in RunStore(finished_run).records() if r.stage == "validation"]
    assert len(held_out) == len(roles)
    tasks = [json.loads(path.read_text()) for path in (finished_run / "tasks").glob("*.json")]
    held_out_tasks = [t for t in tasks if t["seedStream"]]  # drawn apart from the search's seeds
    assert held_out_tasks
    assert all(t["prompts"] == validation_prompts for t in held_out_tasks)
    assert all(t["prompts"] != validation_prompts for t in tasks if not t["seedStream"])


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


def test_resuming_into_the_directory_of_another_search_is_refused(finished_run: Path, tmp_path: Path) -> None:
    other = spec_file(tmp_path)
    manifest = yaml.safe_load(other.read_text())
    manifest["spec"]["algorithm"]["seed"] = 999
    other.write_text(yaml.safe_dump(manifest))
    result = sustaindiffusion("run", str(other), "--out", str(finished_run), check=False)
    assert result.returncode == 2
    assert "holds a different search" in result.stderr


def test_the_report_has_plots_grids_html_and_exports(finished_run: Path) -> None:
    sustaindiffusion("report", str(finished_run))
    report = finished_run / "report"
    status = json.loads((finished_run / "status.json").read_text())
    for stem in ("front_pairs", "parallel_coordinates", "hypervolume"):
        with Image.open(report / f"{stem}.png") as image:
            image.verify()
        with Image.open(report / f"{stem}.png") as image:
            assert image.size[0] > 300
            assert image.size[1] > 200
        assert (report / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    page = (report / "index.html").read_text()
    assert "How these numbers were obtained" in page
    assert "energy measured as GPU" in page
    assert "Held out: what holds up on new prompts (complete)" in page
    assert page.index("Held out: what holds up") < page.index("Pareto front, in-sample")
    for entry in status["front"]:
        assert entry["candidateId"] in page
        with Image.open(report / f"grid-{entry['candidateId']}.png") as grid:
            assert grid.size == (5 * 128, 2 * 128)  # two prompts x four images, five to a row
    rows = (report / "archive.csv").read_text().splitlines()
    assert len(rows) == 1 + len(RunStore(finished_run).records())
    assert len(json.loads((report / "archive.json").read_text())) == len(rows) - 1
    parquet = pyarrow.parquet.read_table(report / "archive.parquet")
    assert parquet.num_rows == len(rows) - 1
    assert "gender_bias" in parquet.column_names
    stages = parquet.column("stage").to_pylist()
    assert stages.count("validation") == len(status["validation"]["points"])


def test_an_exported_profile_round_trips_into_generation_settings(finished_run: Path) -> None:
    status = json.loads((finished_run / "status.json").read_text())
    chosen = status["front"][0]["candidateId"]
    sustaindiffusion("export-profile", str(finished_run), "--candidate", chosen)
    profile: dict[str, Any] = json.loads((finished_run / f"profile-{chosen}.json").read_text())
    settings = CandidateSettings.model_validate(profile["settings"])
    assert settings.candidate_id() == chosen
    assert profile["promptAdditions"] == [settings.weighted_keyword(k) for k in settings.positive_keywords]
    assert profile["negativePrompt"] == settings.negative_prompt()
    assert profile["pipelineArguments"]["num_inference_steps"] == settings.inference_steps
    compile((finished_run / f"profile-{chosen}.py").read_text(), "profile.py", "exec")
    assert profile["measured"]["inSample"] is True
    validated = {p["candidateId"]: p for p in status["validation"]["points"]}
    assert list(profile).index("heldOut") < list(profile).index("measured")  # held out first
    if chosen in validated:
        assert profile["heldOut"]["objectives"] == validated[chosen]["objectives"]
        assert 0 <= profile["heldOut"]["perPrompt"]["signTestP"] <= 1
        assert profile["heldOut"]["perPrompt"]["conclusion"]
    else:
        assert profile["heldOut"] is None
    bill = profile["payback"]
    assert bill["searchJoules"] == pytest.approx(status["energy"]["totalJoules"])
    assert bill["basis"] == ("held-out" if chosen in validated else "in-sample")
    if bill["savedJoulesPerImage"] > 0:
        assert bill["images"] == math.ceil(bill["searchJoules"] / bill["savedJoulesPerImage"])
    else:
        assert bill["images"] is None
    knee = sustaindiffusion("export-profile", str(finished_run), "--rule", "knee")
    assert "(knee)" in knee.stderr
    assert "held out: 2 prompts x 2 images" in knee.stderr  # the knee is always validated
    assert "per held-out prompt against the defaults:" in " ".join(knee.stderr.split())
    assert "(in-sample)" in knee.stderr
    assert "the search spent" in " ".join(knee.stderr.split())
    missing = sustaindiffusion(
        "export-profile", str(finished_run), "--rule", "least-energy:e<=0", check=False
    )
    assert missing.returncode == 2
    assert "no front point meets e<=0" in missing.stderr
    unreadable = sustaindiffusion(
        "export-profile", str(finished_run), "--rule", "least-energy:gb<-1", check=False
    )
    assert "cannot read bound 'gb<-1'" in unreadable.stderr


@pytest.mark.parametrize("case", INVALID_CASES[::5], ids=[c.name for c in INVALID_CASES[::5]])
def test_validate_says_what_the_api_server_says(case: Any, tmp_path: Path) -> None:
    manifest = {
        "apiVersion": "sustaindiffusion.io/v1alpha1",
        "kind": "SustainSearch",
        "metadata": {"name": "bad"},
        "spec": case.spec(),
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(manifest))
    result = sustaindiffusion("validate", str(path), check=False)
    assert result.returncode == 2
    output = " ".join(result.stderr.split())  # rich wraps long lines
    assert case.path in output
    assert " ".join(case.message.split()) in output


def test_validate_accepts_the_examples() -> None:
    for example in sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")):
        assert "valid SustainSearch" in sustaindiffusion("validate", str(example)).stderr


def test_a_search_with_adaptive_evidence_runs_to_the_end_in_batches(tmp_path: Path) -> None:
    """algorithm.adaptive: images in batches of 2 per prompt (of 4), every generate call one batch."""
    spec = spec_file(tmp_path, generations=1)
    manifest = yaml.safe_load(spec.read_text())
    manifest["spec"]["algorithm"]["adaptive"] = {"imagesPerPrompt": 2, "maxImagesPerPrompt": 6}
    spec.write_text(yaml.safe_dump(manifest))
    out = tmp_path / "out"
    sustaindiffusion("run", str(spec), "--out", str(out))
    status = json.loads((out / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    records = RunStore(out).records()
    keys = [r.key for r in records]
    assert len(keys) == len(set(keys))
    batches = [r for r in records if r.stage == "batch"]
    assert {r.generation for r in batches} == {1}
    assert {r.batch for r in batches} >= {0, 1}  # a second batch for those still in contention
    assert all(r.result.metrics.images == 4 for r in batches if r.result.metrics is not None)  # 2 prompts
    tasks = [json.loads(path.read_text()) for path in (out / "tasks").glob("*.json")]
    assert tasks
    assert all(task.get("callImages") == 2 for task in tasks)
    assert all(entry["images"] in (8, 12) for entry in status["front"])  # whole, or one batch more
