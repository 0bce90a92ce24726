"""A whole local search on each model family's tiny pipeline (`sustaindiffusion run`, the same
runner and worker as the quickstart): the spec names the family, the search completes, and the
defaults baseline ran at the family's default steps and guidance. The numbers mean nothing (random
weights); the machinery is what is tested."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sustaindiffusion.local.store import RunStore
from tests.support.tiny import ensure_tiny_models

CLI = [sys.executable, "-m", "sustaindiffusion.local.cli"]
QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"

FAMILIES: dict[str, tuple[str, dict[str, Any], tuple[int, float]]] = {
    # folder: (model.family, search-space changes the family needs, its defaults baseline)
    "sd1": ("StableDiffusion", {}, (50, 7.5)),
    "sdxl": ("StableDiffusionXL", {}, (50, 5.0)),
    "sd35": ("StableDiffusion35", {}, (40, 4.5)),
    "flux-dev": ("Flux1Dev", {"negativeKeywords": {"fixed": []}}, (50, 3.5)),
    "flux-schnell": (
        "Flux1Schnell",
        {"negativeKeywords": {"fixed": []}, "guidanceScale": {"fixed": 0.0}},
        (4, 0.0),
    ),
}


@pytest.mark.parametrize("folder", FAMILIES)
def test_a_local_search_completes_on_each_family(folder: str, tmp_path: Path) -> None:
    family, space, defaults = FAMILIES[folder]
    (tmp_path / "tiny-models").symlink_to(ensure_tiny_models())
    manifest = yaml.safe_load(QUICKSTART.read_text())
    spec = manifest["spec"]
    spec["model"] |= {"id": f"tiny-models/{folder}", "family": family}
    spec["prompts"] |= {"inline": spec["prompts"]["inline"][:1], "imagesPerPrompt": 2}
    spec["searchSpace"] |= space
    spec["algorithm"] |= {"populationSize": 4, "generations": 1}
    spec.pop("validation")
    # The tiny VQA model was fitted on the tiny SD3's images: on other families' images its answers
    # mean even less, so nothing here depends on them (no regenerated images, no constraints).
    spec["scoring"]["humanFilter"] = {"enabled": False}
    spec["constraints"] = {"quality": {"enabled": False}, "validImages": {"enabled": False}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(manifest))
    out = tmp_path / "out"
    result = subprocess.run(
        [*CLI, "run", str(path), "--out", str(out)], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    records = list(RunStore(out).records())
    assert all(record.result.ok for record in records), [r.result.reason for r in records if not r.result.ok]
    assert {record.generation for record in records} == {0, 1}
    assert status["front"]
    summaries = [json.loads(p.read_text()) for p in out.glob("**/candidate.json")]
    baseline = [s for s in summaries if not s["settings"].get("inferenceSteps")]
    assert baseline, "the defaults baseline left its record"
    resolved = baseline[0]["resolved"]
    assert (resolved["inferenceSteps"], resolved["guidanceScale"]) == defaults
