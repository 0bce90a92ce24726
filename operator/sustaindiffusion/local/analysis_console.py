"""What `sustaindiffusion analyze` prints, in this order: held-out changes against the defaults (the
knee of each arm: what a deployment can expect), what the per-prompt wins and losses support, then
the in-sample arm table, labelled so, and with `--compare-paper` the paper's means where they are
comparable. Every table is in full in the files `analyze` writes."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

from rich.console import Console
from rich.table import Table

from sustaindiffusion.local.analysis import SUMMARY_COLUMNS, summary_rows
from sustaindiffusion.local.analysis_output import Analysis

KNEE = "knee"


def show(analysis: Analysis, runs: int, console: Console) -> None:
    arms = len(analysis.arms) - 1
    if analysis.changes.empty and analysis.held_out.empty:
        console.print(
            "[yellow]held out: no arm ran spec.validation, so every number below is in-sample (the "
            "search's own prompts and seeds: optimistic)[/yellow]"
        )
    else:
        _held_out(analysis, console)
    table = Table(
        title=f"in-sample: {runs} runs of {arms} arms, front means on the search's own prompts and seeds "
        "(optimistic): mean ± standard deviation over runs (in-sample change against the defaults)"
    )
    for column in SUMMARY_COLUMNS:
        table.add_column(column)
    for cells in summary_rows(analysis.arms):
        table.add_row(*cells)
    console.print(table)
    if analysis.paper is not None:
        _paper(analysis, console)


def _held_out(analysis: Analysis, console: Console) -> None:
    if not analysis.changes.empty:
        _held_out_changes(analysis, console)
    counts = Table(title="held out, prompt by prompt against the defaults: won / traded / lost")
    for column in ("arm", "point", "runs", "won", "traded", "lost", "sign test p", "share won [95%]"):
        counts.add_column(column)
    for row in analysis.held_out.to_dict("records"):
        counts.add_row(
            str(row["arm"]),
            str(row["role"]),
            str(row["runs"]),
            str(row["units_won"]),
            str(row["units_traded"]),
            str(row["units_lost"]),
            f"{row['sign_test_p']:.2g}",
            f"{row['win_share_low']:.0f}% to {row['win_share_high']:.0f}%",
        )
    console.print(counts)
    for row in analysis.held_out.to_dict("records"):
        if row["role"] == KNEE or KNEE not in set(analysis.held_out["role"]):
            console.print(f"{row['arm']}, {row['role']}: {row['conclusion']}", soft_wrap=True)


def _held_out_changes(analysis: Analysis, console: Console) -> None:
    cells = analysis.held_out_cells()
    knees = cells[cells["point"] == KNEE]
    shown = knees if not knees.empty else cells
    which = "the knee of each arm; " if not knees.empty else ""
    table = Table(
        title="held out: change against the defaults on held-out prompts and fresh seeds, mean over runs "
        f"[95% interval: runs and prompts resampled] ({which}every point in held-out-changes.csv)"
    )
    for column in ("arm", "point", "objective", "runs", "held-out change [95%]", "in-sample change"):
        table.add_column(column)
    for row in shown.to_dict("records"):
        table.add_row(*(str(row[c]) for c in ("arm", "point", "objective", "runs")), *_changes(row))
    console.print(table)
    for note in sorted({str(n) for n in shown["note"] if n}):
        console.print(f"[yellow]{note}[/yellow]", soft_wrap=True)


def _changes(row: Mapping[Hashable, object]) -> tuple[str, str]:
    return str(row["held-out change [95%]"]), f"{row['in-sample change']} (in-sample)"


def _paper(analysis: Analysis, console: Console) -> None:
    assert analysis.paper is not None
    table = Table(
        title="the paper's means beside the study's, in-sample "
        "(docs/fidelity.md: every difference and its file)"
    )
    for column in ("arm", "measure", "paper", "study", "difference"):
        table.add_column(column)
    for row in analysis.paper.to_dict("records"):
        if not row["comparable"]:
            table.add_row(str(row["arm"]), str(row["measure"]), "not comparable", str(row["why_not"]), "")
            continue
        difference = row["difference_percent"]
        table.add_row(
            str(row["arm"]),
            str(row["measure"]),
            f"{row['paper']:.3g}",
            f"{row['study']:.3g}",
            "-" if math.isnan(difference) else f"{difference:+.0f}%",
        )
    console.print(table)
