"""The timing table `make test` prints at its end (hack/timings.py): a run's failures must show in
its last line, whatever pytest called them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "timings.py"


def _timings() -> ModuleType:
    spec = importlib.util.spec_from_file_location("timings", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LINES = [
    "venv\t100\t160\t0\t\t30",
    "unit\t160\t400\t0\t642 passed\t44",
    "observability\t160\t600\t1\t1 error\t111",
    "local\t160\t900\t1\t2 failed, 30 passed, 2 errors\t700",
    "go: helm\t480",
]


def test_the_last_line_counts_passed_failed_errors_and_failed_phases() -> None:
    last = _timings().table(LINES, started=100).splitlines()[-1]
    assert last == (
        "wall clock 13:20; CPU 14:45 in the timed phases; "
        "tests passed 672, failed 2, errors 3; phases failed 2"
    )


def test_each_phase_has_a_row_and_each_build_step_too() -> None:
    rows = _timings().table(LINES, started=100).splitlines()
    assert rows[0].split() == ["phase", "start", "took", "cpu", "result", "tests"]
    observability = next(row for row in rows if row.startswith("observability"))
    assert observability.split()[1:5] == ["+1:00", "7:20", "1:51", "FAILED"]
    assert any(row.strip().startswith("go: helm") and row.rstrip().endswith("8:00") for row in rows)
