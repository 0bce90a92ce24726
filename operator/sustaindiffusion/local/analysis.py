"""The analysis of a study's runs: held-out results first, then the paper's measures and statistics.

    runs = [RunSummary.of(arm, run, engine) for ...]      # one per finished search
    changes = held_out_changes(runs)                      # per arm and validated point: held out
    counts = held_out_counts(runs)                        # per-prompt wins, trades, losses, tested
    table = arm_table(runs)                               # per arm: in-sample mean and spread over runs
    tests = comparisons(runs, reference="recommended")    # each arm against the reference arm

What a user can deploy on is the held-out part, where an arm ran `spec.validation`: each validated
point's change against the defaults on prompts the search never saw and fresh seeds, as the mean
over runs with a 95% interval from a two-level bootstrap (runs, then held-out prompts within each
run, the point paired with the defaults on each prompt), beside its in-sample change (labelled so);
and per held-out prompt, whether it won, traded or lost against the defaults over the runs, with a
sign test and an interval (`heldout_summary`). Everything else is in-sample: the search's own
prompts and seeds, where front values are minima of noisy estimates and so optimistic.

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
import warnings
import zlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from sustaindiffusion.api.objectives import OBJECTIVES, ObjectiveName
from sustaindiffusion.api.results import Metrics
from sustaindiffusion.api.spec import QualityScorer
from sustaindiffusion.api.statistics import prompt_table
from sustaindiffusion.local.paper import PAPER_MEASURES, not_comparable, paper_value
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.heldout import pooled_objective, prompt_outcomes
from sustaindiffusion.search.objectives import MEASURED_SCALE_FACTOR, hypervolume
from sustaindiffusion.search.prompt_counts import verdict
from sustaindiffusion.search.status import validation_status

BOOTSTRAP_SAMPLES = 2000
DETECTOR_QUALITY_NOTE = (
    "DetectorConfidence: quality is the mean over all boxes, held out as in the search, except in "
    "held-out rows written before they counted their boxes (the mean over images of each image's "
    "mean box confidence): compare each change against the defaults of the same run"
)

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
class HeldOutChange:
    """One objective of a validated point against the defaults, in %."""

    held_out: float | None  # on the held-out prompts and seeds (None where the defaults' value is 0)
    low: float | None  # the run's 95% bootstrap interval over prompts
    high: float | None
    in_sample: float | None  # the search's own value against the defaults' (optimistic)
    point: np.ndarray | None = None  # per held-out prompt, what pools (`api.statistics.prompt_table`)
    defaults: np.ndarray | None = None  # the same for the defaults


@dataclass(frozen=True)
class HeldOutCounts:
    """One validated point of a run against the defaults, prompt by prompt."""

    role: str  # knee, best <objective>, spread
    wins: int  # prompts where it dominates the defaults
    pareto: int  # prompts where it trades or ties with them
    losses: int  # prompts where the defaults dominate it
    outcomes: tuple[int, ...] = ()  # per held-out prompt, in order: 1 win, 0 trade or tie, -1 loss
    changes: Mapping[str, HeldOutChange] = field(default_factory=dict)  # by objective name
    detector_quality: bool = False  # quality from the detector: held out and in-sample differ (see above)


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
        return cls(
            arm=arm,
            run=run,
            front=[measures_of(point.metrics) for point in engine.front()],
            defaults=measures_of(defaults) if defaults is not None else None,
            defaults_energy=defaults.objective(ObjectiveName.ENERGY) if defaults is not None else None,
            held_out=validated_points(engine),
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


def validated_points(engine: SearchEngine) -> tuple[HeldOutCounts, ...]:
    """A run's validated front points against the defaults: per-prompt outcomes, held-out changes
    with the run's intervals, in-sample changes, and the per-prompt tables that pool."""
    validation = validation_status(engine)
    if validation is None:
        return ()
    results = dict((c.candidate_id, r) for c, r in engine.validation())
    objectives = engine.spec.objectives
    base = results.get(validation.points[0].candidate_id) if validation.points else None
    in_sample_defaults = engine.defaults_metrics()
    detector = engine.spec.scoring.quality.scorer is QualityScorer.DETECTOR_CONFIDENCE
    points = []
    for point in validation.points[1:]:
        result = results.get(point.candidate_id)
        if (
            point.wins is None
            or result is None
            or not result.per_prompt
            or base is None
            or not base.per_prompt
        ):
            continue
        mine, theirs = prompt_table(result.per_prompt), prompt_table(base.per_prompt)
        changes = {}
        for objective in objectives:
            name = objective.name.value
            held = (point.objectives or {}).get(name)
            in_sample = (point.in_sample or {}).get(name)
            reference = in_sample_defaults.objective(objective.name) if in_sample_defaults else None
            changes[name] = HeldOutChange(
                held.change_percent if held else None,
                held.change_low if held else None,
                held.change_high if held else None,
                (in_sample - reference) / abs(reference) * 100
                if in_sample is not None and reference
                else None,
                mine,
                theirs,
            )
        outcomes = tuple(int(x) for x in prompt_outcomes(objectives, result.per_prompt, base.per_prompt))
        points.append(
            HeldOutCounts(
                point.role, point.wins, point.pareto or 0, point.losses or 0, outcomes, changes, detector
            )
        )
    return tuple(points)


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
            row[f"{measure}_in_sample_change_percent"] = change
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
    "unit",
    "units_won",
    "units_traded",
    "units_lost",
    "sign_test_p",
    "win_share_low",
    "win_share_high",
    "conclusion",
]


def held_out_counts(runs: Sequence[RunSummary]) -> pd.DataFrame:
    """Per arm and validated role (knee, best <objective>, ...): the per-prompt wins, Pareto ties
    and losses against the defaults summed over the runs that validated it, with the shares of
    wins and losses among those prompts; and what they support: per held-out prompt (the unit,
    where every run of the role has the same prompts) the balance of its wins and losses over the
    runs (won, lost, or traded where they even out), a sign test of prompts won against prompts
    lost, a 95% interval of the share won, and a one-line conclusion. Where runs differ in their
    prompts, each prompt of each run is a unit. Empty when no run ran spec.validation."""
    groups: dict[tuple[str, str], list[HeldOutCounts]] = {}
    for run in runs:
        for point in run.held_out:
            groups.setdefault((run.arm, point.role), []).append(point)
    if not groups:
        return pd.DataFrame(columns=HELD_OUT_COLUMNS)
    rows = []
    for (arm, role), points in sorted(groups.items()):
        wins, pareto, losses = (sum(getattr(p, k) for p in points) for k in ("wins", "pareto", "losses"))
        prompts = wins + pareto + losses
        lengths = {len(p.outcomes) for p in points}
        if len(lengths) == 1 and 0 not in lengths:
            balance = np.sign(np.sum([p.outcomes for p in points], axis=0))
            unit = "prompt, over runs" if len(points) > 1 else "prompt"
            won, lost = int(np.sum(balance > 0)), int(np.sum(balance < 0))
            traded = len(balance) - won - lost
        else:
            unit, won, traded, lost = "prompt of a run", wins, pareto, losses
        said = verdict(won, traded, lost)
        rows.append(
            {
                "arm": arm,
                "role": role,
                "runs": len(points),
                "prompts": prompts,
                "wins": wins,
                "pareto": pareto,
                "losses": losses,
                "win_percent": wins / prompts * 100 if prompts else math.nan,
                "loss_percent": losses / prompts * 100 if prompts else math.nan,
                "unit": unit,
                "units_won": won,
                "units_traded": traded,
                "units_lost": lost,
                "sign_test_p": said.p_value,
                "win_share_low": said.win_share[0] * 100,
                "win_share_high": said.win_share[1] * 100,
                "conclusion": said.line(),
            }
        )
    return pd.DataFrame(rows, columns=HELD_OUT_COLUMNS)


HELD_OUT_CHANGE_COLUMNS = [
    "arm",
    "role",
    "objective",
    "runs",
    "held_out_change_percent",
    "held_out_low",
    "held_out_high",
    "in_sample_change_percent",
    "note",
]


def held_out_changes(runs: Sequence[RunSummary], samples: int = BOOTSTRAP_SAMPLES) -> pd.DataFrame:
    """Per arm, validated role and objective: the held-out change against the defaults (the mean
    over the runs that validated it, in %) with a 95% interval from a two-level bootstrap (runs
    drawn with replacement, then each drawn run's held-out prompts, the point paired with the
    defaults; with one run, its prompts alone), and the mean in-sample change beside it (the
    search's own values: optimistic). Seeded by the arm, role and objective, so it repeats."""
    groups: dict[tuple[str, str, str], list[tuple[HeldOutChange, bool]]] = {}
    for run in runs:
        for point in run.held_out:
            for name, change in point.changes.items():
                groups.setdefault((run.arm, point.role, name), []).append((change, point.detector_quality))
    rows = []
    for (arm, role, name), entries in sorted(groups.items()):
        changes = [change for change, _ in entries]
        held = [c.held_out for c in changes if c.held_out is not None]
        in_sample = [c.in_sample for c in changes if c.in_sample is not None]
        low, high = _two_level_interval(ObjectiveName(name), changes, samples, f"{arm}/{role}/{name}")
        detector = name == ObjectiveName.QUALITY.value and any(d for _, d in entries)
        rows.append(
            {
                "arm": arm,
                "role": role,
                "objective": name,
                "runs": len(changes),
                "held_out_change_percent": float(np.mean(held)) if held else math.nan,
                "held_out_low": low,
                "held_out_high": high,
                "in_sample_change_percent": float(np.mean(in_sample)) if in_sample else math.nan,
                "note": DETECTOR_QUALITY_NOTE if detector else "",
            }
        )
    return pd.DataFrame(rows, columns=HELD_OUT_CHANGE_COLUMNS)


def _two_level_interval(
    name: ObjectiveName, changes: Sequence[HeldOutChange], samples: int, key: str
) -> tuple[float, float]:
    """95% percentile interval of the mean held-out change over runs, runs and prompts resampled."""
    tables = [(c.point, c.defaults) for c in changes if c.point is not None and c.defaults is not None]
    if not tables:
        lows = [c.low for c in changes if c.low is not None]
        highs = [c.high for c in changes if c.high is not None]
        single = len(changes) == 1 and lows and highs
        return (lows[0], highs[0]) if single else (math.nan, math.nan)
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    slots = np.zeros((samples, len(tables)))
    for slot in range(len(tables)):
        drawn = rng.integers(0, len(tables), size=samples) if len(tables) > 1 else np.zeros(samples, int)
        for index, (point, defaults) in enumerate(tables):
            chosen = drawn == index
            if not chosen.any():
                continue
            prompts = rng.integers(0, len(point), size=(int(chosen.sum()), len(point)))
            mine = pooled_objective(name, point[prompts].sum(axis=1))
            theirs = pooled_objective(name, defaults[prompts].sum(axis=1))
            safe = np.where(theirs != 0, np.abs(theirs), np.nan)
            slots[chosen, slot] = (mine - theirs) / safe * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw whose defaults are all 0: left out
        means = np.nanmean(slots, axis=1)
    means = means[np.isfinite(means)]
    if not len(means):
        return math.nan, math.nan
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


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
    change = _number(row.get(f"{measure}_in_sample_change_percent"))
    suffix = f" ({change:+.0f}{percent})" if change is not None else ""
    return f"{mean:.3g} {plus_minus} {spread:.3g}{suffix}"


def summary_rows(table: pd.DataFrame, plus_minus: str = "±", percent: str = "%") -> list[list[str]]:
    """The arm table as text cells: mean ± spread (in-sample change against the defaults) per measure."""
    return [
        [
            str(row["arm"]),
            str(row["runs"]),
            *(_cell(row, measure, plus_minus, percent) for measure in _SUMMARY_MEASURES),
        ]
        for row in table.to_dict("records")
    ]


PAPER_COLUMNS = ["arm", "measure", "paper", "study", "difference_percent", "comparable", "why_not"]


def paper_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The study's mean of each measure beside the paper's, for the arms the paper has, with the
    study's difference from the paper in %; where the study's statistic is not the paper's
    (`paper.not_comparable`), no study value and no difference, and the reason instead."""
    rows = []
    for record in table.to_dict("records"):
        arm = str(record["arm"])
        for measure in PAPER_MEASURES:
            published = paper_value(arm, measure)
            if published is None:
                continue
            study = _number(record.get(f"{measure}_mean"))
            why_not = not_comparable(arm, measure)
            if why_not is not None:
                study = None
            rows.append(
                {
                    "arm": arm,
                    "measure": measure,
                    "paper": published,
                    "study": study if study is not None else math.nan,
                    "difference_percent": (study - published) / published * 100
                    if study is not None
                    else math.nan,
                    "comparable": why_not is None,
                    "why_not": why_not or "",
                }
            )
    return pd.DataFrame(rows, columns=PAPER_COLUMNS)


def objective_label(name: str) -> str:
    return OBJECTIVES[ObjectiveName(name)].label
