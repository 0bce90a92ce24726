"""A search's report: plots (PNG and SVG), image grids of front points, one self-contained HTML page,
and the archive exported as CSV and JSON."""

from __future__ import annotations

import base64
import csv
import html
import itertools
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from PIL import Image

from sustaindiffusion.api.agreement import Agreement, disagreeing
from sustaindiffusion.api.artifacts import candidate_directory
from sustaindiffusion.api.objectives import OBJECTIVES
from sustaindiffusion.api.results import Metrics, Screened
from sustaindiffusion.audit.findings import Findings
from sustaindiffusion.local.summary import facts, front_rows
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.prompt_counts import verdict
from sustaindiffusion.search.reference import FrontPoint
from sustaindiffusion.search.status import validation_status

FIGURE_DPI = 100


def save_figure(figure: Figure, target: Path, stem: str) -> Path:
    png = target / f"{stem}.png"
    figure.savefig(png, dpi=FIGURE_DPI, bbox_inches="tight")
    figure.savefig(target / f"{stem}.svg", bbox_inches="tight")
    plt.close(figure)
    return png


def _pairwise(engine: SearchEngine, front: list[FrontPoint], target: Path) -> Path:
    names = [o.name.value for o in engine.spec.objectives]
    measured = [(r, r.metrics) for r in engine.told if r.metrics is not None]
    partial = [m for r, m in measured if r.screened is Screened.OUT]
    full = [(r, m) for r, m in measured if r.screened is not Screened.OUT]
    feasible = [m for r, m in full if engine.reference.feasible(r)]
    infeasible = [m for r, m in full if not engine.reference.feasible(r)]
    defaults = engine.defaults_metrics()
    pairs = list(itertools.combinations(range(len(names)), 2)) or [(0, 0)]
    figure, axes = plt.subplots(1, len(pairs), figsize=(4.5 * len(pairs), 4.2), squeeze=False)
    for axis, (i, j) in zip(axes[0], pairs, strict=True):
        objective_i, objective_j = engine.spec.objectives[i].name, engine.spec.objectives[j].name
        for group, marker, colour, label in (
            (feasible, "o", "#bbbbbb", "evaluated"),
            (infeasible, "x", "#888888", "breaks a constraint"),
            (partial, ".", "#dddddd", "screened out (first images only)"),
        ):
            if group:
                axis.scatter(
                    [m.objective(objective_i) for m in group],
                    [m.objective(objective_j) for m in group],
                    s=14,
                    c=colour,
                    marker=marker,
                    label=label,
                )
        axis.scatter(
            [p.metrics.objective(objective_i) for p in front],
            [p.metrics.objective(objective_j) for p in front],
            s=30,
            c="#1b7837",
            label="Pareto front",
        )
        if defaults is not None:
            axis.scatter(
                [defaults.objective(objective_i)],
                [defaults.objective(objective_j)],
                marker="*",
                s=180,
                c="#b2182b",
                label="model defaults",
            )
        axis.set_xlabel(OBJECTIVES[objective_i].axis_label)
        axis.set_ylabel(OBJECTIVES[objective_j].axis_label)
    axes[0][0].legend(loc="best", fontsize="small")
    figure.suptitle("Objectives: every evaluation, the front and the defaults")
    return save_figure(figure, target, "front_pairs")


def _parallel(engine: SearchEngine, front: list[FrontPoint], target: Path) -> Path:
    names = [OBJECTIVES[o.name].label for o in engine.spec.objectives]
    figure, axis = plt.subplots(figsize=(1.8 * len(names) + 2, 4))
    for point in front:
        axis.plot(range(len(names)), engine.reference.normalised(point.objectives), alpha=0.7)
    axis.set_xticks(range(len(names)), names)
    axis.set_ylabel("normalised (0 best, 1 worst)")
    axis.set_title("Pareto front, parallel coordinates")
    return save_figure(figure, target, "parallel_coordinates")


def _hypervolume(engine: SearchEngine, target: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    history = engine.hypervolume_history
    axis.plot(range(1, len(history) + 1), history, marker="o")
    axis.set_xlabel("generation")
    axis.set_ylabel("hypervolume")
    axis.set_title("Hypervolume of the front per generation")
    return save_figure(figure, target, "hypervolume")


def _grid(images: list[Path], target: Path, columns: int = 5, cell: int = 128) -> Path | None:
    if not images:
        return None
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * cell, rows * cell), "white")
    for index, path in enumerate(images):
        with Image.open(path) as image:
            canvas.paste(
                image.convert("RGB").resize((cell, cell)),
                ((index % columns) * cell, (index // columns) * cell),
            )
    canvas.save(target)
    return target


def _export_archive(engine: SearchEngine, target: Path) -> list[str]:
    rows = []
    roles = {c.candidate_id: c.role for c, _ in engine.validation()}
    told = [("search", r) for r in engine.told] + [("validation", r) for r in engine.validation_told]
    for stage, result in told:
        candidate = engine.candidate(result.candidate_id)
        row: dict[str, object] = {
            "candidate_id": result.candidate_id,
            "stage": stage,
            "generation": candidate.generation if stage == "search" else engine.generation,
            "baseline": candidate.baseline or "",
            "validation_role": (roles.get(result.candidate_id) or "") if stage == "validation" else "",
            "status": result.status.value,
            "screened": result.screened.value if result.screened else "",
            "reason": result.reason or "",
            **{f"setting_{k}": v for k, v in candidate.settings.model_dump(mode="json").items()},
            **(result.metrics.model_dump(mode="json") if result.metrics else {}),
            **({"device": result.device.model_dump(mode="json")} if result.device else {}),
            **(
                {"per_prompt": [s.model_dump(mode="json") for s in result.per_prompt]}
                if result.per_prompt
                else {}
            ),
        }
        rows.append(row)
    (target / "archive.json").write_text(json.dumps(rows, indent=1))
    columns = sorted({key for row in rows for key in row}, key=lambda k: (not k.startswith("candidate"), k))
    flat = [{k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()} for row in rows]
    with (target / "archive.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    written = ["archive.csv", "archive.json"]
    try:
        import pyarrow  # noqa: PLC0415 - optional: the report extra
        import pyarrow.parquet  # noqa: PLC0415
    except ImportError:
        return written
    table = pyarrow.Table.from_pylist([{column: row.get(column) for column in columns} for row in flat])
    pyarrow.parquet.write_table(table, target / "archive.parquet")
    return [*written, "archive.parquet"]


def embed_png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _share(share: float | None) -> str:
    return f"{share:.0%}" if share is not None else "-"


def _validation_section(engine: SearchEngine) -> str:
    validation = validation_status(engine)
    if validation is None:
        return (
            "<h2>Held-out validation</h2><p>Not run: the front's values above are in-sample (the best of "
            "many noisy draws on the search's own prompts and seeds), so expect them to be optimistic. "
            "Add <code>spec.validation</code> to check the front on fresh prompts and seeds.</p>"
        )
    names = [o.name.value for o in engine.spec.objectives]
    header = "".join(f"<th>{html.escape(n)}<br>held out [95%]</th><th>vs defaults</th>" for n in names)
    rows = []
    for point in validation.points:
        if point.objectives is None:
            reason = html.escape(point.reason or "not evaluated")
            rows.append(
                f"<tr><td><code>{point.candidate_id}</code></td><td>{html.escape(point.role)}</td>"
                f'<td colspan="{2 * len(names) + 2}">{reason}</td></tr>'
            )
            continue
        cells = []
        for name in names:
            held = point.objectives.get(name)
            if held is None:
                cells.append("<td>-</td><td>-</td>")
                continue
            in_sample = point.in_sample.get(name) if point.in_sample else None
            measured = f"{held.value:.4g} [{held.low:.4g}, {held.high:.4g}]"
            if in_sample is not None:
                measured += f"<br><small>in-sample {in_sample:.4g}</small>"
            change = (
                f"{held.change_percent:+.1f}% [{held.change_low:+.1f}, {held.change_high:+.1f}]"
                if held.change_percent is not None
                and held.change_low is not None
                and held.change_high is not None
                else "-"
            )
            cells.append(f"<td>{measured}</td><td>{change}</td>")
        counts = (
            f"{point.wins}/{point.pareto}/{point.losses}<br><small>"
            f"{html.escape(verdict(point.wins, point.pareto or 0, point.losses or 0).conclusion())}</small>"
            if point.wins is not None
            else "-"
        )
        rows.append(
            f"<tr><td><code>{point.candidate_id}</code></td><td>{html.escape(point.role)}</td>"
            f"{''.join(cells)}<td>{counts}</td><td>{_share(point.valid_share)}</td></tr>"
        )
    state = "complete" if validation.complete else "INCOMPLETE"
    return (
        f"<h2>Held out: what holds up on new prompts ({state})</h2>"
        f"<p>{validation.prompts} held-out prompts x {validation.images_per_prompt} images per point, on "
        "seeds the search never used: the values to deploy on. Intervals are 95% bootstrap intervals "
        "over prompts; the in-sample value below each is the search's own (optimistic). Per prompt, a "
        "win is better than the defaults in at least one objective and worse in none, a loss the "
        "reverse, a trade-off neither; under each count, what it supports (a sign test of wins "
        "against losses, at 5%).</p>"
        f"<table><tr><th>candidate</th><th>role</th>{header}<th>wins/trade-offs/losses</th>"
        f"<th>valid</th></tr>{''.join(rows)}</table>"
    )


def _no_audit() -> str:
    return (
        "<h2>Bias figures checked by people</h2><p>No audit: every bias figure here is the detector's. "
        "To check them against people, see <code>sustaindiffusion audit --help</code> (export a sample "
        "of the saved images, label it on the page, score it; then report again).</p>"
    )


def _agreement_cell(metrics: Metrics, limit: float) -> str:
    """The detectors' agreement on a result, flagged where it disagrees more than `limit`."""
    agreement = Agreement.of(metrics)
    if agreement is None:
        return "<td>-</td>"
    text = html.escape(agreement.describe())
    if agreement.exceeds(limit):
        return f'<td class="warn">&#9888; {text}</td>'
    return f"<td>{text}</td>"


def _cross_check_section(engine: SearchEngine) -> str:
    """Every evaluated candidate's agreement between the detector and its cross-check, the ones
    above spec.scoring.crossCheck.maxDisagreement first and under a warning."""
    scoring = engine.spec.scoring
    check = scoring.cross_check
    if check is None:
        return ""
    detector = scoring.detector_family
    limit = check.max_disagreement
    told = [("search", r) for r in engine.told] + [("validation", r) for r in engine.validation_told]
    rows = []
    for stage, result in told:
        agreement = Agreement.of(result.metrics) if result.metrics is not None else None
        if result.metrics is None or agreement is None:
            continue
        baseline = engine.candidate(result.candidate_id).baseline or ""
        disagreement = agreement.disagreement
        rows.append(
            (
                -(disagreement or 0.0),
                result.candidate_id,
                f"<tr><td><code>{result.candidate_id}</code></td><td>{stage}</td>"
                f"<td>{html.escape(baseline)}</td>{_agreement_cell(result.metrics, limit)}"
                f"<td>{_share(disagreement)}</td></tr>",
            )
        )
    flagged = disagreeing([r for _, r in told], limit)
    warning = (
        f'<p class="warn">&#9888; Warning: the {detector.value} detector and the {check.family.value} '
        f"cross-check disagree on more than {limit:.0%} of the images of {len(flagged)} candidates "
        f"({html.escape(', '.join(candidate for candidate, _ in flagged[:10]))}"
        f"{' and more' if len(flagged) > 10 else ''}): their bias figures rest on answers the two "
        "detector families do not share; look at their images before trusting them.</p>"
        if flagged
        else f"<p>No candidate's detectors disagree on more than {limit:.0%} of its images.</p>"
    )
    return (
        f"<h2>Detector cross-check: {check.family.value} checks {detector.value}</h2>{warning}"
        "<p>Agreement per candidate: on the person gate over all its images; on gender and ethnicity "
        "over the images both families call a person (a can't-tell agrees only with a can't-tell). "
        "Disagreement: the largest of the three shares of disagreement. Only the detector's answers "
        "count for the biases.</p>"
        "<table><tr><th>candidate</th><th>stage</th><th>baseline</th><th>agreement</th>"
        f"<th>disagreement</th></tr>{''.join(row for *_, row in sorted(rows))}</table>"
    )


def write_report(
    name: str, engine: SearchEngine, run_directory: Path | None, target: Path, audit: Findings | None = None
) -> Path:
    """Write a search's report into `target`; returns the HTML page. Image grids need the local
    run directory's artifacts (`run_directory`); a search read from a cluster has none here.
    `audit`: a scored audit of this search (`sustaindiffusion.audit.findings`), shown after the
    held-out validation."""
    target.mkdir(parents=True, exist_ok=True)
    front = engine.front()
    plots = [_pairwise(engine, front, target)]
    if front:
        plots.append(_parallel(engine, front, target))
    if engine.hypervolume_history:
        plots.append(_hypervolume(engine, target))
    exports = _export_archive(engine, target)
    names = [o.name.value for o in engine.spec.objectives]
    check = engine.spec.scoring.cross_check
    agreement_header = "<th>detectors agree</th>" if check else ""

    def agreement(metrics: Metrics) -> str:
        return _agreement_cell(metrics, check.max_disagreement) if check else ""

    rows = []
    for row in front_rows(engine):
        point = row.point
        candidate_id = point.candidate.candidate_id
        # The search's own images: held-out validation writes the same candidate's under a later generation.
        images = (
            sorted(
                candidate_directory(
                    run_directory / "artifacts", point.candidate.generation, candidate_id
                ).glob("*.png")
            )
            if run_directory is not None
            else []
        )
        grid = _grid(images, target / f"grid-{candidate_id}.png")
        settings = point.candidate.settings
        cells = "".join(f"<td>{html.escape(row.cell(k, v))}</td>" for k, v in point.objectives.items())
        rows.append(
            f"<tr><td><code>{candidate_id}</code></td><td>{settings.inference_steps}</td><td>{settings.guidance_scale}</td>"
            f"<td>{html.escape(', '.join(settings.positive_keywords))}</td>"
            f"<td>{html.escape(', '.join(settings.negative_keywords))}</td>"
            f"<td>{settings.prompt_weight}</td>{cells}<td>{point.metrics.quality:.4g}</td>"
            f"<td>{_share(point.metrics.valid_share)}</td>{agreement(point.metrics)}"
            f"<td>{embed_png(grid) if grid else ''}</td></tr>"
        )
    baselines = "".join(
        f"<tr><td>{html.escape(c.baseline or '')}</td><td><code>{c.candidate_id}</code></td>"
        + "".join(f"<td>{r.metrics.objective(o.name):.4g}</td>" for o in engine.spec.objectives)
        + f"<td>{r.metrics.quality:.4g}</td><td>{_share(r.metrics.valid_share)}</td>"
        + f"{agreement(r.metrics)}</tr>"
        for c, r in engine.baselines()
        if r is not None and r.metrics is not None
    )
    header = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    how = "".join(f"<li>{html.escape(line)}</li>" for line in facts(engine))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>SustainDiffusion report: {html.escape(name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}} img{{max-width:100%}}
.warn{{background:#fde0dc;color:#8a1c0c;font-weight:bold}}</style></head>
<body><h1>SustainDiffusion report: {html.escape(name)}</h1>
<p>{html.escape(engine.outcome().message)}; {engine.evaluations} evaluations,
{engine.failures} failed, {engine.total_energy_joules:,.0f} J of CPU+GPU energy.</p>
<h2>How these numbers were obtained</h2><ul>{how}</ul>
{_validation_section(engine)}
{audit.html() if audit is not None else _no_audit()}
<h2>Baselines (in-sample)</h2><table><tr><th>baseline</th><th>candidate</th>{header}<th>quality</th>
<th>valid</th>{agreement_header}</tr>{baselines}</table>
<h2>Pareto front, in-sample ({len(front)} candidates, on the search's own prompts and seeds: each value
the best of many noisy draws, so optimistic; biases with their 95% interval from the answer counts;
in brackets: in-sample change against the defaults)</h2>
<table><tr><th>candidate</th><th>steps</th><th>guidance</th><th>positive keywords</th>
<th>negative keywords</th><th>weight</th>{header}<th>quality</th><th>valid</th>{agreement_header}
<th>images</th></tr>
{"".join(rows)}</table>
{_cross_check_section(engine)}
<h2>Plots (in-sample)</h2>{"".join(embed_png(p) for p in plots)}
<p>Exports: {", ".join(exports)}; plots also as SVG.</p>
</body></html>
"""
    index = target / "index.html"
    index.write_text(page)
    return index
