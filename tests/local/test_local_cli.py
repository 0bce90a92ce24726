"""`sustaindiffusion` end to end on the tiny models: run, resume after an interruption, report,
export a profile, and validate with the API server's words."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow.parquet
import pytest
import yaml
from PIL import Image

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.local.store import RunStore
from tests.support.local_runs import QUICKSTART, spec_file, sustaindiffusion
from tests.support.spec_cases import INVALID_CASES


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
