"""The analysis of a study's runs, with the paper's measures and statistics.

    runs = [RunSummary.of(arm, run, engine) for ...]      # one per finished search
    table = arm_table(runs)                               # per arm: mean and spread over runs
    tests = comparisons(runs, reference="recommended")    # each arm against the reference arm

A run's value of a measure is the mean over its Pareto front (as the paper's table averages its
Pareto solutions): quality, gender and ethnic bias, CPU and GPU energy per image (J and kWh) and
seconds per image; beside them the model defaults' values from the same run, and the run's
hypervolume in one space shared by every arm (gender bias, ethnic bias, energy scaled by twice the
study's mean defaults energy, and quality, all whatever the arm optimised), so arms with other
objectives are comparable; and, where the arm ran `spec.validation`, each validated point's
per-prompt wins, Pareto ties and losses against the defaults on the held-out prompts. Statistics
come from scipy.stats: Wilcoxon's signed-rank test when both arms ran the same seeds (paired by
seed), Mann-Whitney's U test otherwise; Vargha and Delaney's A12 from the U statistic, with its
magnitude label; Kruskal-Wallis across all arms; and Holm's step-down correction over all the
comparisons of a measure (written here: scipy has no Holm, and five lines do not justify another
dependency).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from sustaindiffusion.api.objectives import ObjectiveName
from sustaindiffusion.api.results import Metrics
from sustaindiffusion.local.paper import PAPER_MEASURES, paper_value
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.objectives import MEASURED_SCALE_FACTOR, hypervolume
from sustaindiffusion.search.status import validation_status

JOULES_PER_KWH = 3.6e6
MEASURES = (
    "quality",
    "gender_bias",
    "ethnic_bias",
    "cpu_joules_per_image",
    "gpu_joules_per_image",
    "cpu_kwh_per_image",
    "gpu_kwh_per_image",
    "seconds_per_image",
)
TESTED = PAPER_MEASURES  # the measures of the paper's table, tested arm against arm


def measures_of(metrics: Metrics) -> dict[str, float]:
    images = max(metrics.images, 1)
    return {
        "quality": metrics.quality,
        "gender_bias": metrics.gender_bias,
        "ethnic_bias": metrics.ethnic_bias,
        "cpu_joules_per_image": metrics.cpu_joules / images,
        "gpu_joules_per_image": metrics.gpu_joules / images,
        "cpu_kwh_per_image": metrics.cpu_joules / images / JOULES_PER_KWH,
        "gpu_kwh_per_image": metrics.gpu_joules / images / JOULES_PER_KWH,
        "seconds_per_image": metrics.seconds_per_image,
    }


@dataclass(frozen=True)
class HeldOutCounts:
    """One validated point of a run against the defaults, prompt by prompt."""

    role: str  # knee, best <objective>, spread
    wins: int  # prompts where it dominates the defaults
    pareto: int  # prompts where it trades or ties with them
    losses: int  # prompts where the defaults dominate it


@dataclass(frozen=True)
class RunSummary:
    arm: str
    run: int  # its seed
    front: list[dict[str, float]]  # the measures of each Pareto solution
    defaults: dict[str, float] | None
    defaults_energy: float | None  # J per image, for the shared hypervolume scale
    held_out: tuple[HeldOutCounts, ...] = ()  # its validated points, where it ran spec.validation

    @classmethod
    def of(cls, arm: str, run: int, engine: SearchEngine) -> RunSummary:
        defaults = engine.defaults_metrics()
        validation = validation_status(engine)
        held_out = tuple(
            HeldOutCounts(point.role, point.wins, point.pareto or 0, point.losses or 0)
            for point in (validation.points if validation is not None else [])
            if point.role != "defaults" and point.wins is not None
        )
        return cls(
            arm=arm,
            run=run,
            front=[measures_of(point.metrics) for point in engine.front()],
            defaults=measures_of(defaults) if defaults is not None else None,
            defaults_energy=defaults.objective(ObjectiveName.ENERGY) if defaults is not None else None,
            held_out=held_out,
        )

    def mean(self, measure: str) -> float:
        values = [point[measure] for point in self.front]
        return float(np.mean(values)) if values else math.nan

    def hypervolume(self, energy_scale: float) -> float:
        """In the shared space: biases, energy over `energy_scale`, and 1 - quality (0 best)."""
        if not self.front:
            return 0.0
        points = np.array(
            [
                [
                    p["gender_bias"],
                    p["ethnic_bias"],
                    (p["cpu_joules_per_image"] + p["gpu_joules_per_image"]) / energy_scale,
                    1.0 - p["quality"],
                ]
                for p in self.front
            ]
        )
        return hypervolume(points)


def energy_scale(runs: Sequence[RunSummary]) -> float:
    """Twice the study's mean defaults energy per image (as a search normalises energy)."""
    energies = [r.defaults_energy for r in runs if r.defaults_energy]
    return MEASURED_SCALE_FACTOR * float(np.mean(energies)) if energies else 1.0


def per_run(runs: Sequence[RunSummary]) -> pd.DataFrame:
    """One row per run: its front means, its defaults' values and its shared hypervolume."""
    scale = energy_scale(runs)
    rows = []
    for run in runs:
        row: dict[str, object] = {"arm": run.arm, "run": run.run, "front_size": len(run.front)}
        row |= {measure: run.mean(measure) for measure in MEASURES}
        row |= {f"defaults_{m}": (run.defaults or {}).get(m, math.nan) for m in MEASURES}
        row["hypervolume"] = run.hypervolume(scale)
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["arm", "run"], ignore_index=True)


def arm_table(runs: Sequence[RunSummary]) -> pd.DataFrame:
    """Per arm: runs, and the mean and standard deviation over runs of each measure and the
    hypervolume, with the change in % of each measure's mean against the defaults' mean; the
    defaults get a row of their own (their values over all runs of the study)."""
    frame = per_run(runs)
    rows = []
    for arm, group in frame.groupby("arm", sort=True):
        row: dict[str, object] = {"arm": arm, "runs": len(group)}
        for measure in (*MEASURES, "hypervolume"):
            row[f"{measure}_mean"] = group[measure].mean()
            row[f"{measure}_std"] = group[measure].std(ddof=1) if len(group) > 1 else 0.0
        for measure in MEASURES:
            defaults = group[f"defaults_{measure}"].mean()
            change = (group[measure].mean() - defaults) / abs(defaults) * 100 if defaults else math.nan
            row[f"{measure}_change_percent"] = change
        rows.append(row)
    defaults_row: dict[str, object] = {"arm": "defaults", "runs": len(frame)}
    for measure in MEASURES:
        defaults_row[f"{measure}_mean"] = frame[f"defaults_{measure}"].mean()
        defaults_row[f"{measure}_std"] = frame[f"defaults_{measure}"].std(ddof=1) if len(frame) > 1 else 0.0
    return pd.DataFrame([defaults_row, *rows])


HELD_OUT_COLUMNS = [
    "arm",
    "role",
    "runs",
    "prompts",
    "wins",
    "pareto",
    "losses",
    "win_percent",
    "loss_percent",
]


def held_out_counts(runs: Sequence[RunSummary]) -> pd.DataFrame:
    """Per arm and validated role (knee, best <objective>, ...): the per-prompt wins, Pareto ties
    and losses against the defaults summed over the runs that validated it, with the shares of
    wins and losses among those prompts. Empty when no run ran spec.validation."""
    rows = [
        {
            "arm": run.arm,
            "role": point.role,
            "wins": point.wins,
            "pareto": point.pareto,
            "losses": point.losses,
        }
        for run in runs
        for point in run.held_out
    ]
    if not rows:
        return pd.DataFrame(columns=HELD_OUT_COLUMNS)
    frame = pd.DataFrame(rows)
    table = (
        frame.groupby(["arm", "role"], sort=True)
        .agg(runs=("wins", "size"), wins=("wins", "sum"), pareto=("pareto", "sum"), losses=("losses", "sum"))
        .reset_index()
    )
    table["prompts"] = table["wins"] + table["pareto"] + table["losses"]
    table["win_percent"] = table["wins"] / table["prompts"] * 100
    table["loss_percent"] = table["losses"] / table["prompts"] * 100
    return table[HELD_OUT_COLUMNS]


def a12(first: Sequence[float], second: Sequence[float]) -> float:
    """Vargha and Delaney's A12: the probability that a value of `first` exceeds one of
    `second` (ties count half), from the Mann-Whitney U statistic of `first`."""
    result = stats.mannwhitneyu(first, second, alternative="two-sided")
    return float(result.statistic) / (len(first) * len(second))


def a12_magnitude(value: float) -> str:
    """Vargha and Delaney's thresholds on |A12 - 0.5|: 0.06, 0.14 and 0.21."""
    distance = abs(value - 0.5)
    if distance < 0.06:
        return "negligible"
    if distance < 0.14:
        return "small"
    if distance < 0.21:
        return "medium"
    return "large"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (len(p_values) - rank) * p_values[index])
        adjusted[index] = min(1.0, running)
    return adjusted


def compare(first: Sequence[float], second: Sequence[float], paired: bool) -> tuple[str, float]:
    """The test's name and its two-sided p-value (1 where the samples cannot differ)."""
    if paired:
        differences = np.subtract(first, second)
        if not np.any(differences):
            return "wilcoxon", 1.0
        return "wilcoxon", float(stats.wilcoxon(first, second, alternative="two-sided").pvalue)
    if len(set(first) | set(second)) == 1:
        return "mannwhitneyu", 1.0
    return "mannwhitneyu", float(stats.mannwhitneyu(first, second, alternative="two-sided").pvalue)


def comparisons(runs: Sequence[RunSummary], reference: str) -> pd.DataFrame:
    """Each other arm against `reference`, per measure and for the hypervolume: the test (paired
    by seed when both arms ran the same seeds), its p-value and Holm's adjustment over the arms,
    A12 of the arm against the reference with its magnitude, and the Kruskal-Wallis p-value of
    the measure across all arms."""
    frame = per_run(runs)
    arms = sorted(frame["arm"].unique())
    if reference not in arms:
        raise LookupError(f"no runs of the reference arm {reference!r} (arms: {', '.join(arms)})")
    rows = []
    for measure in (*TESTED, "hypervolume"):
        samples = {arm: frame[frame["arm"] == arm].set_index("run")[measure].dropna() for arm in arms}
        groups = [s.to_numpy() for s in samples.values() if len(s)]
        distinct = len({float(v) for g in groups for v in g}) > 1
        kruskal = float(stats.kruskal(*groups).pvalue) if len(groups) > 1 and distinct else 1.0
        base = samples[reference]
        measured = []
        for arm in arms:
            if arm == reference or not len(samples[arm]) or not len(base):
                continue
            other = samples[arm]
            paired = sorted(other.index) == sorted(base.index)
            first = other.sort_index().to_numpy() if paired else other.to_numpy()
            second = base.sort_index().to_numpy() if paired else base.to_numpy()
            test, p_value = compare(list(first), list(second), paired)
            effect = a12(list(first), list(second))
            measured.append(
                {
                    "measure": measure,
                    "arm": arm,
                    "reference": reference,
                    "test": test,
                    "p_value": p_value,
                    "a12": effect,
                    "magnitude": a12_magnitude(effect),
                    "kruskal_p_value": kruskal,
                }
            )
        for row, adjusted in zip(measured, holm([r["p_value"] for r in measured]), strict=True):
            row["p_holm"] = adjusted
        rows += measured
    return pd.DataFrame(rows)


SUMMARY_COLUMNS = (
    "arm",
    "runs",
    "quality",
    "gender bias",
    "ethnic bias",
    "CPU kWh/img",
    "GPU kWh/img",
    "s/img",
    "HV",
)
_SUMMARY_MEASURES = (*TESTED, "hypervolume")


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not math.isnan(value) else None


def _cell(row: Mapping[Hashable, object], measure: str, plus_minus: str, percent: str) -> str:
    mean = _number(row.get(f"{measure}_mean"))
    if mean is None:
        return "-"
    spread = _number(row.get(f"{measure}_std")) or 0.0
    change = _number(row.get(f"{measure}_change_percent"))
    suffix = f" ({change:+.0f}{percent})" if change is not None else ""
    return f"{mean:.3g} {plus_minus} {spread:.3g}{suffix}"


def summary_rows(table: pd.DataFrame, plus_minus: str = "±", percent: str = "%") -> list[list[str]]:
    """The arm table as text cells: mean ± spread (change against the defaults) per measure."""
    return [
        [
            str(row["arm"]),
            str(row["runs"]),
            *(_cell(row, measure, plus_minus, percent) for measure in _SUMMARY_MEASURES),
        ]
        for row in table.to_dict("records")
    ]


def paper_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The study's mean of each measure beside the paper's, for the arms the paper has, with the
    study's difference from the paper in %."""
    rows = []
    for record in table.to_dict("records"):
        arm = str(record["arm"])
        for measure in PAPER_MEASURES:
            published = paper_value(arm, measure)
            if published is None:
                continue
            study = _number(record.get(f"{measure}_mean"))
            rows.append(
                {
                    "arm": arm,
                    "measure": measure,
                    "paper": published,
                    "study": study if study is not None else math.nan,
                    "difference_percent": (study - published) / published * 100
                    if study is not None
                    else math.nan,
                }
            )
    return pd.DataFrame(rows, columns=["arm", "measure", "paper", "study", "difference_percent"])
