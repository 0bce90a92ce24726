"""What `sustaindiffusion analyze` writes from a study's runs: CSV, LaTeX, and the HTML page with
its box plots; and the discovery of a study directory's runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.local.analysis import HeldOutCounts, RunSummary
from sustaindiffusion.local.analysis_output import Analysis
from sustaindiffusion.local.cli import EXIT_INVALID, main
from sustaindiffusion.local.store import RunStore, StoreError
from sustaindiffusion.local.study_runs import local_runs
from sustaindiffusion.search.loop import GenerationLoop
from sustaindiffusion.search.records import ArchiveRecord
from tests.support.engine_runs import drive_loop, make_spec
from tests.support.fake_executor import FakeExecutor, MemoryArchive
from tests.support.measures import DEFAULTS, front_point


def _runs() -> list[RunSummary]:
    knee = (HeldOutCounts("knee", 4, 1, 0),)
    return [
        summary
        for seed in range(3)
        for summary in (
            RunSummary(
                "sustaindiffusion", seed, [front_point(0.6, 0.3 + 0.01 * seed, 500.0)], DEFAULTS, 1000.0, knee
            ),
            RunSummary("rs", seed, [front_point(0.6, 0.8, 900.0 + seed)], DEFAULTS, 1000.0),
        )
    ]


def test_every_output_is_written_and_the_page_embeds_its_box_plots(tmp_path: Path) -> None:
    written = Analysis.of(_runs(), reference="rs", compare_paper=True).write(tmp_path)
    assert [path.name for path in written] == [
        "held-out.csv",
        "runs.csv",
        "arms.csv",
        "tests.csv",
        "paper.csv",
        "arms.tex",
        "box_plots.png",
        "box_plots.svg",
        "index.html",
    ]
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 6
    held_out = pd.read_csv(tmp_path / "held-out.csv")
    assert held_out[["arm", "role", "runs", "wins", "prompts"]].values.tolist() == [
        ["sustaindiffusion", "knee", 3, 12, 15]
    ]
    with Image.open(tmp_path / "box_plots.png") as plot:
        assert plot.width > 800
    assert (tmp_path / "box_plots.svg").exists()
    page = (tmp_path / "index.html").read_text()
    assert page.count("<table") == 4  # held-out counts, arms, tests, the paper's means
    assert page.index("Held out, prompt by prompt") < page.index("In-sample, per arm")
    assert "data:image/png;base64," in page
    assert "In-sample: each arm against rs" in page
    assert "<td>sustaindiffusion</td>" in page


def test_the_latex_table_is_the_arm_table_with_booktabs_rules() -> None:
    latex = Analysis.of(_runs(), reference="rs").latex()
    assert latex.startswith("\\begin{table}")
    assert "\\toprule" in latex
    assert "\\bottomrule" in latex
    assert "\\label{tab:study}" in latex
    rows = [line for line in latex.splitlines() if line.startswith(("defaults", "rs", "sustaindiffusion"))]
    assert [row.split(" & ")[0] for row in rows] == ["defaults", "rs", "sustaindiffusion"]
    # 0.31 +- 0.01 gender bias, -69% against the defaults' 1.0; % and +- escaped for LaTeX
    assert "0.31 $\\pm$ 0.01 (-69\\%)" in rows[2]


def _archived_search(generations: int) -> tuple[SustainSearchSpec, list[ArchiveRecord]]:
    """A search of the fake executor to its end, and its archive."""
    spec = make_spec(algorithm={"generations": generations, "populationSize": 4})
    archive = MemoryArchive()
    loop = GenerationLoop(
        "s", spec, archive, FakeExecutor(), prompts=lambda: ["a portrait"], save_images=False
    )
    drive_loop(loop)
    return spec, list(archive.records)


def test_a_study_directory_yields_its_finished_runs_and_names_the_others(tmp_path: Path) -> None:
    spec, records = _archived_search(generations=1)
    for arm, number, archived in (("fair", 0, records[:2]), ("fair", 1, records), ("plain", 0, [])):
        store = RunStore(tmp_path / arm / f"run-{number}")
        store.open(spec, f"{arm}-{number}")
        store.append(archived)
    (tmp_path / "fair" / "run-x").mkdir()  # not a run's name
    (tmp_path / "notes" / "run-2").mkdir(parents=True)  # no search in it
    runs = local_runs(tmp_path)
    assert [(r.arm, r.run, r.source) for r in runs.finished] == [
        ("fair", 1, str(tmp_path / "fair" / "run-1"))
    ]
    assert runs.finished[0].engine.evaluations == len(records)
    assert runs.unfinished == [str(tmp_path / "fair" / "run-0"), str(tmp_path / "plain" / "run-0")]


@pytest.mark.parametrize("content", ["{", "[]", "{}", '{"name": "x", "spec": {"prompts": 3}}'])
def test_a_run_whose_spec_cannot_be_read_is_a_clear_error(tmp_path: Path, content: str) -> None:
    run_directory = tmp_path / "fair" / "run-0"
    run_directory.mkdir(parents=True)
    (run_directory / "spec.json").write_text(content)
    with pytest.raises(StoreError, match=f"{run_directory}/spec.json is not a search's spec"):
        local_runs(tmp_path)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "give a study's output directory or --study NAME, not both"),
        (["DIR", "--study", "paper"], "give a study's output directory or --study NAME, not both"),
        (["DIR"], "no finished run in DIR (expected ARM/run-N directories)"),
        (["DIR", "--reference", "nowhere"], "no runs of the reference arm 'nowhere' (arms: fair)"),
    ],
)
def test_analyze_refuses_what_it_cannot_analyse_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    if "--reference" in arguments:
        spec, records = _archived_search(generations=1)
        store = RunStore(tmp_path / "fair" / "run-0")
        store.open(spec, "fair-0")
        store.append(records)
    argv = ["analyze", *(str(tmp_path) if a == "DIR" else a for a in arguments)]
    assert main(argv) == EXIT_INVALID
    assert message.replace("DIR", str(tmp_path)) in " ".join(capsys.readouterr().err.split())


def test_analyze_without_a_cluster_to_read_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-kubeconfig"
    assert main(["analyze", "--study", "paper", "--kubeconfig", str(missing)]) == EXIT_INVALID
    assert "analyze: no cluster to read from" in " ".join(capsys.readouterr().err.split())
