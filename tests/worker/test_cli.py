"""The worker process end to end on the tiny models: the report in the termination-message file,
artifacts, exit codes, and clear errors for tasks that cannot succeed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.contract import EXIT_OK, EXIT_PERMANENT, SHARD_ENV, worker_command
from sustaindiffusion.api.spec import ModelSpec, ScoringSpec
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate
from sustaindiffusion.api.wire import decode_report

CANDIDATES = [
    CandidateSettings(),
    CandidateSettings(
        inference_steps=2, guidance_scale=4.0, positive_keywords=["photograph"], prompt_weight=2
    ),
    CandidateSettings(
        inference_steps=3, guidance_scale=1.0, negative_keywords=["lowres", "art"], prompt_weight=1
    ),
]


def write_task(
    directory: Path, tiny_models: Path, model_id: str = "sd3", pipeline_class: str = "Auto"
) -> Path:
    scoring = ScoringSpec.model_validate(
        {
            "vqaModel": {"id": str(tiny_models / "blip-vqa")},
            "quality": {"model": {"id": str(tiny_models / "clip")}},
            "humanFilter": {"maxRetries": 1},
        }
    )
    model = ModelSpec(
        id=str(tiny_models / model_id), pipeline_class=pipeline_class, width=64, height=64, dtype="float32"
    )
    task = EvaluationTask(
        search="cli-test",
        generation=2,
        model=model,
        prompts=["Photo portrait of a Software Engineer that codes."],
        images_per_prompt=2,
        scoring=scoring,
        save_images=True,
        candidates_per_shard=2,
        candidates=[TaskCandidate(candidate_id=c.candidate_id(), settings=c) for c in CANDIDATES],
    )
    path = directory / "task.json"
    path.write_text(task.model_dump_json(by_alias=True))
    return path


def run_worker(task: Path, shard: int, directory: Path) -> tuple[int, Path]:
    message = directory / "termination-log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES")}  # no cluster credentials
    env[SHARD_ENV] = str(shard)  # as an Indexed Job sets it
    # No model hub here: an id that is not a path fails at once, not after the hub client's
    # retries (176 s in a warm `make test`), as in the test kubelet's pods.
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        worker_command(
            task,
            program=(sys.executable, "-m", "sustaindiffusion.worker"),
            termination_log=message,
            artifacts=directory / "artifacts",
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result.returncode, message


def test_a_shard_is_evaluated_and_reported(tiny_models: Path, tmp_path: Path) -> None:
    task = write_task(tmp_path, tiny_models)
    code, message = run_worker(task, 1, tmp_path)  # shard 1 holds the third candidate only
    assert code == EXIT_OK
    report = decode_report(message.read_text())
    assert (report.generation, report.shard) == (2, 1)
    assert (report.device.gpu_energy, report.device.cpu_energy) == ("none", "estimate-cpu-seconds")
    assert report.device.name == "cpu"
    assert all(r.device == report.device for r in report.results)
    assert [r.candidate_id for r in report.results] == [CANDIDATES[2].candidate_id()]
    result = report.results[0]
    assert result.ok
    assert result.metrics is not None
    assert result.metrics.images == 2
    artifacts = tmp_path / "artifacts" / "generation-0002" / CANDIDATES[2].candidate_id()
    assert (artifacts / "candidate.json").exists()
    assert len(list(artifacts.glob("*.png"))) == 2


def test_shard_zero_evaluates_its_candidates_in_order(tiny_models: Path, tmp_path: Path) -> None:
    code, message = run_worker(write_task(tmp_path, tiny_models), 0, tmp_path)
    assert code == EXIT_OK
    ids = [r.candidate_id for r in decode_report(message.read_text()).results]
    assert ids == [CANDIDATES[0].candidate_id(), CANDIDATES[1].candidate_id()]


@pytest.mark.parametrize(
    ("model_id", "pipeline_class", "message"),
    [
        ("no-such-model", "Auto", "cannot load model"),
        ("sd3", "NoSuchPipeline", "unknown pipeline class 'NoSuchPipeline'"),
        ("sd3", "StableDiffusionPipeline", "sd3"),
    ],
)
def test_tasks_that_cannot_succeed_exit_permanently_with_the_reason(
    tiny_models: Path, tmp_path: Path, model_id: str, pipeline_class: str, message: str
) -> None:
    code, path = run_worker(write_task(tmp_path, tiny_models, model_id, pipeline_class), 0, tmp_path)
    assert code == EXIT_PERMANENT
    report = decode_report(path.read_text())
    assert report.fatal is not None
    assert message in report.fatal
    assert report.results == []


def test_invalid_task_and_shard_are_permanent(tiny_models: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"search": "x"}')
    code, path = run_worker(broken, 0, tmp_path)
    assert code == EXIT_PERMANENT
    assert "invalid task" in (decode_report(path.read_text()).fatal or "")
    code, path = run_worker(write_task(tmp_path, tiny_models), 5, tmp_path)
    assert code == EXIT_PERMANENT
    assert "shard index 5 out of range" in (decode_report(path.read_text()).fatal or "")
