"""A study: the arms of an experiment (one SustainSearch manifest per arm, in one directory), each
run several times with the seeds 0..N-1, in a cluster or on this machine.

    arms = load_arms(Path("examples/paper"))
    manifests = expand(arms, study="paper", runs=10)   # for kubectl apply -f -
    run_directory(Path("out/paper"), arm, run)         # where `study run` keeps each run

Each expanded manifest is its arm's, named `<study>-<arm>-r<run>`, labelled with the study, the arm
and the run (so a study's searches are listed, and analysed, by label), with `algorithm.seed` set
to the run number. Everything else is the arm's own.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sustaindiffusion.api.validation import FieldError, ManifestError, validate_manifest

STUDY_LABEL = "sustaindiffusion.io/study"
ARM_LABEL = "sustaindiffusion.io/arm"
RUN_LABEL = "sustaindiffusion.io/run"
MAX_RUNS = 100
RESERVED_ARM = "defaults"  # the analysis's row of the model defaults
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NAME_LIMIT = 63  # label values, and the names of the objects a search owns, stay within it


@dataclass(frozen=True)
class Arm:
    name: str
    path: Path  # its manifest file: relative model paths are relative to its directory
    manifest: dict[str, Any]


def load_arms(directory: Path) -> list[Arm]:
    """Every `*.yaml` of the directory, in name order, each a valid SustainSearch (ManifestError
    names the file and the field otherwise); arm names are their `metadata.name`s."""
    if not directory.is_dir():
        raise ManifestError(str(directory), [FieldError("<directory>", "not a directory of arm manifests")])
    arms = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as error:
            raise ManifestError(str(path), [FieldError("<file>", f"invalid YAML: {error}")]) from None
        if len(documents) != 1:
            raise ManifestError(
                str(path), [FieldError("<file>", f"expected one document, found {len(documents)}")]
            )
        manifest = validate_manifest(documents[0], source=str(path))
        arms.append(Arm(manifest.name, path, documents[0]))
    if not arms:
        raise ManifestError(str(directory), [FieldError("<directory>", "holds no *.yaml arm manifest")])
    names = [arm.name for arm in arms]
    if RESERVED_ARM in names:
        raise ManifestError(
            str(directory),
            [FieldError("metadata.name", f"{RESERVED_ARM!r} names the model defaults' row of the analysis")],
        )
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ManifestError(
            str(directory),
            [FieldError("metadata.name", f"arm names must be unique: {', '.join(duplicated)}")],
        )
    return arms


def check_study(study: str, arms: list[Arm], runs: int) -> None:
    """The study's name and run count fit what its manifests' names and labels allow."""
    problems = []
    if NAME.match(study) is None:
        problems.append(FieldError("study", f"{study!r} is not a lowercase name (letters, digits, '-')"))
    if not 1 <= runs <= MAX_RUNS:
        problems.append(FieldError("runs", f"must be 1 to {MAX_RUNS}, got {runs}"))
    longest = max(len(search_name(study, arm.name, max(runs - 1, 0))) for arm in arms)
    if longest > NAME_LIMIT:
        problems.append(
            FieldError(
                "study", f"search names would be {longest} characters, more than {NAME_LIMIT}: shorten it"
            )
        )
    if problems:
        raise ManifestError(study, problems)


def search_name(study: str, arm: str, run: int) -> str:
    return f"{study}-{arm}-r{run}"


def expand(arms: list[Arm], study: str, runs: int) -> list[dict[str, Any]]:
    """The study's SustainSearch manifests: each arm once per run, with seed = run."""
    check_study(study, arms, runs)
    manifests = []
    for arm in arms:
        for run in range(runs):
            manifest = copy.deepcopy(arm.manifest)
            metadata = manifest.setdefault("metadata", {})
            metadata["name"] = search_name(study, arm.name, run)
            metadata["labels"] = (metadata.get("labels") or {}) | {
                STUDY_LABEL: study,
                ARM_LABEL: arm.name,
                RUN_LABEL: str(run),
            }
            manifest["spec"].setdefault("algorithm", {})["seed"] = run
            validate_manifest(manifest, source=f"{arm.path} (run {run})")
            manifests.append(manifest)
    return manifests


def run_directory(study_directory: Path, arm: str, run: int) -> Path:
    return study_directory / arm / f"run-{run}"
