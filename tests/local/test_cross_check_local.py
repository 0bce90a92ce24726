"""A cross-checked search end to end on the tiny models: `sustaindiffusion run` with the Clip family
checking the Vqa detector, then `report`; and `validate` refusing a family that checks itself."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from sustaindiffusion.api.agreement import Agreement
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.local.store import RunStore
from sustaindiffusion.search.decisions import DETECTORS_DISAGREE, CrossCheckView
from tests.support.local_runs import QUICKSTART, sustaindiffusion
from tests.support.tiny import ensure_tiny_models


def _manifest(directory: Path, scoring: dict[str, object]) -> Path:
    (directory / "tiny-models").symlink_to(ensure_tiny_models())
    manifest = yaml.safe_load(QUICKSTART.read_text())
    spec = manifest["spec"]
    spec["algorithm"] |= {"populationSize": 4, "generations": 1}
    spec["execution"]["candidatesPerPod"] = 2
    spec.pop("validation")
    spec["prompts"]["imagesPerPrompt"] = 3
    spec["scoring"] |= scoring
    path = directory / "search.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def test_a_cross_checked_search_records_reports_and_conditions_the_agreement(tmp_path: Path) -> None:
    # A limit of 0: any disagreement at all is over it (the tiny models' answers are random).
    scoring = {
        "clipModel": {"id": "tiny-models/clip-detector"},
        "crossCheck": {"family": "Clip", "maxDisagreement": 0},
    }
    out = tmp_path / "out"
    ran = sustaindiffusion("run", str(_manifest(tmp_path, scoring)), "--out", str(out))
    results = [r.result for r in RunStore(out).records()]
    assert results
    assert all(r.ok for r in results)
    agreements = {}
    for result in results:
        assert result.metrics is not None
        agreement = Agreement.of(result.metrics)
        assert agreement is not None, "every result carries the cross-check's counts"
        agreements[result.candidate_id] = agreement
        # Its images' records hold the Clip family's answers, and count to the same numbers.
        [folder] = (out / "artifacts").glob(f"generation-*/{result.candidate_id}")
        records = [json.loads(line) for line in (folder / "images.jsonl").read_text().splitlines()]
        assert len(records) == result.metrics.images
        assert all(record["cross_check"]["family"] == "Clip" for record in records)
        assert agreement.person_agreed == sum(r["human"] == r["cross_check"]["human"] for r in records)
        assert agreement.persons == sum(r["human"] and r["cross_check"]["human"] for r in records)
    status = json.loads((out / "status.json").read_text())
    [condition] = [c for c in status["conditions"] if c["type"] == DETECTORS_DISAGREE]
    spec = SustainSearchSpec.model_validate(json.loads((out / "spec.json").read_text())["spec"])
    view = CrossCheckView.of(spec.scoring.cross_check, results)
    assert view is not None
    flagged = [candidate for candidate, _ in view.disagreeing]
    assert flagged == sorted(
        (c for c, a in agreements.items() if (a.disagreement or 0) > 0),
        key=lambda c: (-(agreements[c].disagreement or 0), c),
    )
    assert condition["status"] == ("True" if flagged else "False")
    for candidate in flagged[: CrossCheckView.NAMED]:
        assert candidate in condition["message"]
    # The Warning event, as the local runner prints it, once: when the condition turned True.
    assert (ran.stdout + ran.stderr).count(f"{DETECTORS_DISAGREE}:") == (1 if flagged else 0)
    report = tmp_path / "report"
    sustaindiffusion("report", str(out), "--out", str(report))
    page = (report / "index.html").read_text()
    assert "Detector cross-check: Clip checks Vqa" in page
    for candidate, agreement in agreements.items():
        assert agreement.describe() in page
        assert f"<code>{candidate}</code>" in page
    assert ("Warning: the Vqa detector and the Clip cross-check disagree" in page) == bool(flagged)


def test_validate_refuses_a_family_that_checks_itself(tmp_path: Path) -> None:
    path = _manifest(tmp_path, {"detector": "Clip", "crossCheck": {"family": "Clip"}})
    result = sustaindiffusion("validate", str(path), check=False)
    assert result.returncode == 2
    output = " ".join(result.stderr.split())
    assert (
        "spec.scoring.crossCheck.family: crossCheck.family must differ from the detector's family" in output
    )
