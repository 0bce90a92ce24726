"""Print the phases of a `make test` run as one table: when each started, how long it took, how it
ended, and the tests each suite passed. Standard library only.

    python3 hack/timings.py out/ci/timings.tsv [--started EPOCH]

Lines are `phase<TAB>start<TAB>end<TAB>status<TAB>summary<TAB>cpu seconds` (hack/timed.sh) or
`phase<TAB>seconds` (steps timed inside a build script: each Go build, each image step); the latter
are listed without a start. CPU seconds add up what a phase and the processes it waited for used:
their sum over 2 cores bounds the wall clock of the whole run from below.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def _minutes(seconds: float) -> str:
    return f"{int(seconds) // 60:d}:{int(seconds) % 60:02d}"


def table(lines: list[str], started: int | None) -> str:
    phases, steps = [], []
    for line in lines:
        fields = line.rstrip("\n").split("\t")
        if len(fields) >= 4:
            cpu = fields[5] if len(fields) > 5 and fields[5] else ""
            phases.append((fields[0], int(fields[1]), int(fields[2]), int(fields[3]), [*fields, ""][4], cpu))
        elif len(fields) == 2:
            steps.append((fields[0], float(fields[1])))
    if not phases and not steps:
        return "no phases were timed\n"
    origin = started if started is not None else min((p[1] for p in phases), default=0)
    end = max((p[2] for p in phases), default=origin)
    rows = [("phase", "start", "took", "cpu", "result", "tests")]
    for name, begin, finish, status, summary, cpu in sorted(phases, key=lambda p: (p[1], p[0])):
        result = "ok" if status == 0 else f"FAILED ({status})"
        cpu_time = _minutes(float(cpu)) if cpu else ""
        rows.append(
            (name, f"+{_minutes(begin - origin)}", _minutes(finish - begin), cpu_time, result, summary)
        )
    for name, seconds in steps:
        rows.append((f"  {name}", "", _minutes(seconds), "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]

    def total(outcome: str) -> int:
        # pytest's last line: "3 failed, 5 passed, 1 error in 2.0s" ("errors" when several)
        pattern = re.compile(rf"(\d+) {outcome}s?\b")
        return sum(int(m.group(1)) for p in phases for m in [pattern.search(p[4])] if m)

    cpu_total = sum(float(p[5]) for p in phases if p[5])
    failed_phases = sum(1 for p in phases if p[3] != 0)
    out.append(
        f"wall clock {_minutes(end - origin)}; CPU {_minutes(cpu_total)} in the timed phases; "
        f"tests passed {total('passed')}, failed {total('failed')}, errors {total('error')}; "
        f"phases failed {failed_phases}"
    )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("timings", type=Path)
    parser.add_argument("--started", type=int, help="epoch seconds the run started (default: first phase)")
    args = parser.parse_args(argv)
    lines = args.timings.read_text().splitlines() if args.timings.exists() else []
    sys.stdout.write(table(lines, args.started))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
