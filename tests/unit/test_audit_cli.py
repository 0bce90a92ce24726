"""`sustaindiffusion audit` refuses what it cannot do with a message that says what to do instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from sustaindiffusion.audit.auditset import verify
from sustaindiffusion.local.cli import main
from tests.support.audit_sets import export, make_run

FRONT = [(True, "female", "white")] * 3 + [(True, "male", "black")] * 3


def test_export_takes_a_directory_or_a_cluster_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "export", str(tmp_path), "--search", "quickstart"]) == 2
    assert "a local search's output directory or --search NAME, not both" in capsys.readouterr().err
    assert main(["audit", "export"]) == 2
    assert "not both" in capsys.readouterr().err
    missing = tmp_path / "no-such-kubeconfig"
    out = tmp_path / "audit"
    command = ["audit", "export", "--search", "quickstart", "--kubeconfig", str(missing), "--out", str(out)]
    assert main(command) == 2
    assert "no cluster to read from" in capsys.readouterr().err
    assert not out.exists()  # nothing written


def test_export_needs_a_search_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "export", str(tmp_path)]) == 2
    assert "is not a search output directory (no spec.json)" in capsys.readouterr().err
    assert main(["audit", "export", str(tmp_path), "--per-stratum", "0"]) == 2
    assert "--per-stratum must be at least 1" in capsys.readouterr().err


def test_serve_refuses_a_changed_set_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    export(run, make_run(run, {"f": FRONT}), tmp_path / "audit")
    image = tmp_path / "audit" / verify(tmp_path / "audit").items[0].image
    image.write_bytes(b"changed")
    assert main(["audit", "serve", str(tmp_path / "audit"), "--annotator", "ann", "--port", "1"]) == 2
    error = capsys.readouterr().err
    assert "was changed after export" in error
    assert "not starting" in error


def test_serve_refuses_a_bad_annotator_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    export(run, make_run(run, {"f": FRONT}), tmp_path / "audit")
    assert main(["audit", "serve", str(tmp_path / "audit"), "--annotator", "a b"]) == 2
    assert "annotator id 'a b'" in capsys.readouterr().err


def test_score_without_labels_says_how_to_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    export(run, make_run(run, {"f": FRONT}), tmp_path / "audit")
    assert main(["audit", "score", str(tmp_path / "audit")]) == 2
    assert "sustaindiffusion audit serve" in capsys.readouterr().err
    assert main(["audit", "score", str(tmp_path)]) == 2
    assert "is not an audit set" in capsys.readouterr().err
