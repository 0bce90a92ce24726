"""Studies: the paper's arms load and validate, a study expands into one labelled, seeded search
per arm and run, and what cannot make a valid study is refused with the file and the reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.validation import ManifestError
from sustaindiffusion.local.study import (
    ARM_LABEL,
    RUN_LABEL,
    STUDY_LABEL,
    expand,
    load_arms,
    run_directory,
)

PAPER = Path(__file__).resolve().parents[2] / "examples" / "paper"


def test_the_paper_arms_are_the_methods_arms() -> None:
    arms = {arm.name: SustainSearchSpec.model_validate(arm.manifest["spec"]) for arm in load_arms(PAPER)}
    assert set(arms) == {"sustaindiffusion", "recommended", "q", "q-b", "q-e", "npe", "rs"}
    objectives = {name: [o.name.value for o in spec.objectives] for name, spec in arms.items()}
    assert objectives["sustaindiffusion"] == ["Quality", "GenderBias", "EthnicBias", "Energy"]
    assert objectives["recommended"] == ["GenderBias", "EthnicBias", "Energy"]
    assert arms["recommended"].constraints.quality.enabled
    assert not arms["sustaindiffusion"].constraints.quality.enabled
    assert objectives["q"] == ["Quality"]
    assert objectives["q-b"] == ["Quality", "GenderBias", "EthnicBias"]
    assert objectives["q-e"] == ["Quality", "Energy"]
    npe = arms["npe"].search_space
    assert (npe.positive_keywords.fixed, npe.negative_keywords.fixed, npe.prompt_weight.fixed) == ([], [], 0)
    budget = {
        name: spec.algorithm.population_size * spec.algorithm.generations for name, spec in arms.items()
    }
    assert budget["rs"] == budget["sustaindiffusion"] == 200  # random search of the same budget
    assert arms["rs"].algorithm.generations == 1  # NSGA-II's first generation: a uniform sample
    for spec in arms.values():
        fair = [b for b in spec.baselines or [] if b.name == "fair"]
        assert fair[0].positive_keywords == [
            "such that it fairly represents different genders and ethnicities"
        ]


def test_a_study_is_every_arm_once_per_run_seeded_by_its_run() -> None:
    arms = load_arms(PAPER)
    manifests = expand(arms, study="paper", runs=3)
    assert len(manifests) == 3 * len(arms)
    seen = set()
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        arm, run = labels[ARM_LABEL], int(labels[RUN_LABEL])
        assert labels[STUDY_LABEL] == "paper"
        assert manifest["metadata"]["name"] == f"paper-{arm}-r{run}"
        assert manifest["spec"]["algorithm"]["seed"] == run
        seen.add((arm, run))
    assert seen == {(arm.name, run) for arm in arms for run in range(3)}
    original = yaml.safe_load((PAPER / "q.yaml").read_text())
    assert "seed" not in original["spec"]["algorithm"]  # the arms themselves are untouched
    assert run_directory(Path("out/paper"), "q", 2) == Path("out/paper/q/run-2")


def _arm(directory: Path, name: str, text: str | None = None) -> None:
    manifest = yaml.safe_load((PAPER / "q.yaml").read_text())
    manifest["metadata"]["name"] = name
    (directory / f"{name}.yaml").write_text(text if text is not None else yaml.safe_dump(manifest))


def _prepare(directory: Path, kind: str) -> None:
    if kind == "empty":
        return
    _arm(directory, "a", "kind: Other\n" if kind == "not a search" else None)
    if kind == "bad yaml":
        (directory / "b.yaml").write_text("spec: [")
    if kind == "duplicate arm":
        _arm(directory, "a-copy", (directory / "a.yaml").read_text())
    if kind == "reserved arm":
        _arm(directory, "defaults")


@pytest.mark.parametrize(
    ("kind", "study", "runs", "message"),
    [
        ("empty", "s", 2, "holds no *.yaml arm manifest"),
        ("bad yaml", "s", 2, "invalid YAML"),
        ("not a search", "s", 2, "must be SustainSearch"),
        ("duplicate arm", "s", 2, "must be unique: a"),
        ("reserved arm", "s", 2, "'defaults' names the model defaults' row"),
        ("valid", "s", 0, "must be 1 to 100"),
        ("valid", "s", 101, "must be 1 to 100"),
        ("valid", "Not_A_Name", 2, "is not a lowercase name"),
        ("valid", "s" * 60, 2, "more than 63: shorten it"),
    ],
)
def test_what_cannot_make_a_study_is_refused_with_the_reason(
    tmp_path: Path, kind: str, study: str, runs: int, message: str
) -> None:
    _prepare(tmp_path, kind)
    with pytest.raises(ManifestError, match=re.escape(message)):
        expand(load_arms(tmp_path), study=study, runs=runs)


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not a directory of arm manifests"):
        load_arms(tmp_path / "nowhere")
