"""A study's runs, read back for its analysis: from the directory `study run` wrote (ARM/run-N),
or from a cluster's SustainSearches labelled with the study (`sustaindiffusion.local.cluster`).

    runs = local_runs(Path("out/paper"))
    runs.finished      # StudyRun(arm, run, source, engine), replayed from each run's archive
    runs.unfinished    # where each run that has not ended is (left out of the analysis)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sustaindiffusion.local.store import RunStore
from sustaindiffusion.search.engine import SearchEngine

RUN_PREFIX = "run-"


@dataclass(frozen=True)
class StudyRun:
    arm: str
    run: int  # its number, which is its seed
    source: str  # where it was read: a directory, or namespace/name
    engine: SearchEngine


@dataclass
class StudyRuns:
    finished: list[StudyRun] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)

    def add(self, run: StudyRun) -> None:
        if run.engine.outcome().finished:
            self.finished.append(run)
        else:
            self.unfinished.append(run.source)


def run_number(text: str) -> int | None:
    """A run's number from its directory name's or label's digits; None when it is not one."""
    return int(text) if text.isdigit() else None


def local_runs(directory: Path) -> StudyRuns:
    """Each ARM/run-N directory holding a search (StoreError when one cannot be read back)."""
    runs = StudyRuns()
    for run_directory in sorted(directory.glob(f"*/{RUN_PREFIX}*")):
        number = run_number(run_directory.name.removeprefix(RUN_PREFIX))
        store = RunStore(run_directory)
        if number is None or not store.exists():
            continue
        _, spec = store.load_spec()
        engine = SearchEngine.from_archive(spec, store.records())
        runs.add(StudyRun(run_directory.parent.name, number, str(run_directory), engine))
    return runs
