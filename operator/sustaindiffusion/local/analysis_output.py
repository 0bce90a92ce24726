"""What `sustaindiffusion analyze` writes: the tables as CSV, the arm table in LaTeX, and one
self-contained HTML page with box plots of each measure over each arm's runs. Held-out results
come first (`held-out-changes.csv`, `held-out.csv`, and the page's first sections); the arm
table, its tests and box plots are in-sample and say so.

    Analysis.of(runs, reference="recommended").write(Path("out/paper/analysis"))
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import pandas as pd

from sustaindiffusion.local.analysis import (
    SUMMARY_COLUMNS,
    RunSummary,
    arm_table,
    comparisons,
    held_out_changes,
    held_out_counts,
    objective_label,
    paper_comparison,
    per_run,
    summary_rows,
)
from sustaindiffusion.local.report import embed_png, save_figure

PLOTTED = (  # per-run column, axis label, and the better direction
    ("quality", "quality", "higher"),
    ("gender_bias", "gender bias", "lower"),
    ("ethnic_bias", "ethnic bias", "lower"),
    ("cpu_kwh_per_image", "CPU kWh per image", "lower"),
    ("gpu_kwh_per_image", "GPU kWh per image", "lower"),
    ("seconds_per_image", "seconds per image", "lower"),
    ("hypervolume", "hypervolume (shared space)", "higher"),
)
PLOT_COLUMNS = 4


@dataclass(frozen=True)
class Analysis:
    reference: str
    runs: pd.DataFrame  # one row per run
    arms: pd.DataFrame  # per arm, and the defaults
    tests: pd.DataFrame  # each arm against the reference
    held_out: pd.DataFrame  # per-prompt counts against the defaults, where validation ran
    paper: pd.DataFrame | None  # the paper's means beside the study's, when asked for
    changes: pd.DataFrame  # held-out changes against the defaults, with intervals

    @classmethod
    def of(cls, runs: Sequence[RunSummary], reference: str, compare_paper: bool = False) -> Analysis:
        """LookupError when no run is of the `reference` arm."""
        arms = arm_table(runs)
        return cls(
            reference=reference,
            runs=per_run(runs),
            arms=arms,
            tests=comparisons(runs, reference),
            held_out=held_out_counts(runs),
            paper=paper_comparison(arms) if compare_paper else None,
            changes=held_out_changes(runs),
        )

    def write(self, target: Path) -> list[Path]:
        """Every output under `target`; the paths written, the HTML page last."""
        target.mkdir(parents=True, exist_ok=True)
        written = []
        tables = {
            "held-out-changes": self.changes,
            "held-out": self.held_out,
            "runs": self.runs,
            "arms": self.arms,
            "tests": self.tests,
        }
        if self.paper is not None:
            tables["paper"] = self.paper
        for stem, table in tables.items():
            if stem.startswith("held-out") and table.empty:
                continue
            table.to_csv(target / f"{stem}.csv", index=False)
            written.append(target / f"{stem}.csv")
        (target / "arms.tex").write_text(self.latex())
        written.append(target / "arms.tex")
        plot = box_plots(self.runs, self.arms, target)
        page = target / "index.html"
        page.write_text(self.html(plot))
        return [*written, plot, plot.with_suffix(".svg"), page]

    def latex(self) -> str:
        """The arm table as the paper prints its own: mean ± standard deviation over the runs, and
        the change against the defaults, per measure (booktabs rules)."""
        cells = pd.DataFrame(
            summary_rows(self.arms, plus_minus="$\\pm$", percent="\\%"), columns=SUMMARY_COLUMNS
        )
        arms = len(self.arms) - 1
        runs = int(self.runs.groupby("arm").size().max()) if len(self.runs) else 0
        caption = (
            f"In-sample: {arms} arms, up to {runs} runs each: mean $\\pm$ standard deviation over the runs "
            "of each run's Pareto-front mean on the search's own prompts and seeds (in brackets: "
            "in-sample change against the model's defaults; front values are optimistic)."
        )
        return cells.style.hide(axis="index").to_latex(
            hrules=True,
            caption=caption,
            label="tab:study",
            column_format="l" + "r" * (len(SUMMARY_COLUMNS) - 1),
        )

    def held_out_cells(self) -> pd.DataFrame:
        """The held-out changes as text: `-12.3% [-20.1, -4.0]` held out, and the in-sample change."""
        frame = self.changes
        return pd.DataFrame(
            {
                "arm": frame["arm"],
                "point": frame["role"],
                "objective": [objective_label(name) for name in frame["objective"]],
                "runs": frame["runs"],
                "held-out change [95%]": [
                    change_text(c, low, high)
                    for c, low, high in zip(
                        frame["held_out_change_percent"],
                        frame["held_out_low"],
                        frame["held_out_high"],
                        strict=True,
                    )
                ],
                "in-sample change": [change_text(c) for c in frame["in_sample_change_percent"]],
                "note": frame["note"],
            }
        )

    def html(self, plot: Path) -> str:
        summary = pd.DataFrame(summary_rows(self.arms), columns=SUMMARY_COLUMNS)
        tests = self.tests.round({"p_value": 4, "p_holm": 4, "a12": 3, "kruskal_p_value": 4})
        sections = []
        if self.changes.empty and self.held_out.empty:
            sections.append(
                "<h2>Held out</h2><p>No arm ran <code>spec.validation</code>: every number below is "
                "in-sample (front values on the search's own prompts and seeds: optimistic).</p>"
            )
        if not self.changes.empty:
            sections += [
                "<h2>Held out: change against the defaults on prompts the search never saw, fresh seeds</h2>"
                "<p>What a deployment can expect. Mean over the runs that validated each point, with a 95% "
                "interval from a two-level bootstrap (runs, then held-out prompts, paired with the "
                "defaults); the in-sample change beside it is the search's own, optimistic.</p>",
                self.held_out_cells().to_html(index=False, escape=True),
            ]
        if not self.held_out.empty:
            rounding = {"win_percent": 1, "loss_percent": 1, "sign_test_p": 3}
            sections += [
                "<h2>Held out, prompt by prompt: won, traded and lost against the defaults</h2>"
                "<p>A win is better than the defaults in at least one objective and worse in none. A "
                "prompt's wins and losses over the runs are balanced into one outcome per prompt; the "
                "sign test and the interval of the share won are over those prompts.</p>",
                self.held_out.round(rounding | {"win_share_low": 0, "win_share_high": 0}).to_html(
                    index=False, escape=True
                ),
            ]
        sections += [
            "<h2>In-sample, per arm: mean ± standard deviation over runs of the front means (in-sample "
            "change against the defaults)</h2><p>On the search's own prompts and seeds: each front value "
            "is a minimum of noisy estimates, so these are optimistic.</p>",
            summary.to_html(index=False, escape=True),
            f"<h2>In-sample: box plots over runs</h2>{embed_png(plot)}",
            f"<h2>In-sample: each arm against {html.escape(self.reference)}</h2>"
            "<p>Wilcoxon signed-rank where both arms ran the same seeds (paired by seed), Mann-Whitney U "
            "otherwise; p-values Holm-corrected over the arms of each measure; A12 is the probability "
            "that a run of the arm has a higher value than one of the reference.</p>",
            tests.to_html(index=False, escape=True),
        ]
        if self.paper is not None:
            sections += [
                "<h2>The paper's means beside the study's (in-sample)</h2>"
                "<p>Rows whose statistic is not the paper's say why instead of showing two numbers; "
                "docs/fidelity.md lists every difference and where it is implemented.</p>",
                self.paper.round(4).to_html(index=False, escape=True),
            ]
        return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>SustainDiffusion study analysis</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px}} img{{max-width:100%}}</style></head>
<body><h1>SustainDiffusion study analysis</h1>
<p>{len(self.runs)} finished runs of {len(self.arms) - 1} arms. Held-out results first; then the
in-sample ones, where a run's value of a measure is the mean over its Pareto front and its
hypervolume is in one space shared by every arm.</p>
{"".join(sections)}
</body></html>
"""


def change_text(change: float, low: float | None = None, high: float | None = None) -> str:
    """A change in %, with its interval when given: `-12.3% [-20.1, -4.0]`; `-` where undefined."""
    if change is None or pd.isna(change):
        return "-"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{change:+.1f}%"
    return f"{change:+.1f}% [{low:+.1f}, {high:+.1f}]"


def box_plots(runs: pd.DataFrame, arms: pd.DataFrame, target: Path) -> Path:
    """One box per arm for each measure over its runs; the defaults' mean as a dashed line."""
    rows = -(-len(PLOTTED) // PLOT_COLUMNS)
    figure, axes = plt.subplots(rows, PLOT_COLUMNS, figsize=(4.2 * PLOT_COLUMNS, 3.8 * rows), squeeze=False)
    names = sorted(runs["arm"].unique())
    defaults = arms.set_index("arm").loc["defaults"] if "defaults" in set(arms["arm"]) else None
    for axis, (column, label, better) in zip(axes.flat, PLOTTED, strict=False):
        samples = [runs.loc[runs["arm"] == name, column].dropna().to_numpy() for name in names]
        axis.boxplot(samples, tick_labels=names)
        if defaults is not None and column != "hypervolume" and pd.notna(defaults[f"{column}_mean"]):
            axis.axhline(defaults[f"{column}_mean"], linestyle="--", color="#888888", label="defaults")
            axis.legend(loc="best", fontsize="small")
        axis.set_title(f"{label} ({better} is better)", fontsize="medium")
        axis.tick_params(axis="x", labelrotation=30)
    for axis in list(axes.flat)[len(PLOTTED) :]:
        axis.set_visible(False)
    figure.tight_layout()
    return save_figure(figure, target, "box_plots")
