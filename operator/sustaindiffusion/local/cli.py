"""`sustaindiffusion`: run a search without a cluster, validate specs, report, export a profile.

    sustaindiffusion validate SPEC.yaml
    sustaindiffusion run SPEC.yaml [--out DIR] [--device auto|cpu|cuda]
    sustaindiffusion report DIR [--out REPORT_DIR]
    sustaindiffusion report --search NAME [--namespace NS] [--kubeconfig FILE] [--out REPORT_DIR]
    sustaindiffusion export-profile DIR (--candidate ID | --rule knee | --rule least-energy[:gb<=X,eb<=Y])
                                    [--out FILE]
    sustaindiffusion study expand ARMS_DIR [--runs 10] [--study NAME]   # | kubectl apply -f -
    sustaindiffusion study run ARMS_DIR [--runs 10] [--study NAME] [--out DIR] [--device ...]
    sustaindiffusion analyze STUDY_OUT_DIR [--reference ARM] [--out DIR] [--compare-paper]
    sustaindiffusion analyze --study NAME [--namespace NS] [--kubeconfig FILE] [--reference ARM] [--out DIR]
    sustaindiffusion audit export DIR [--out AUDIT_DIR] [--per-stratum 10] [--seed 0]
    sustaindiffusion audit serve AUDIT_DIR --annotator ID [--host 127.0.0.1] [--port 8765]
    sustaindiffusion audit score AUDIT_DIR

`report` and `export-profile` show an audit's human-checked, corrected biases when DIR/audit/score.json
exists (the default of `audit export`), or the one given with --audit AUDIT_DIR.

`run` writes to DIR (default: out/<search name>) and resumes from it when run again: nothing
finished is evaluated twice. Ctrl-C stops it cleanly. `study run` runs each arm's runs in
DIR/<arm>/run-<i> (default DIR: out/<study>) one after another, and resumes the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from sustaindiffusion.api.artifacts import ALL_GENERATIONS
from sustaindiffusion.api.validation import (
    ManifestError,
    SustainSearchManifest,
    load_manifest,
    validate_manifest,
)
from sustaindiffusion.audit.findings import FindingsError, find, from_cluster
from sustaindiffusion.local import audit_commands
from sustaindiffusion.local.cluster_options import add_cluster_options
from sustaindiffusion.local.heldout_summary import held_out_table
from sustaindiffusion.local.interrupt import StopRequest, stop_requests
from sustaindiffusion.local.profile import SelectionError, diffusers_snippet, held_out_values, profile, select
from sustaindiffusion.local.runner import LocalRunner
from sustaindiffusion.local.runner import Progress as RunProgress
from sustaindiffusion.local.store import RunStore, StoreError
from sustaindiffusion.local.study import ARM_LABEL, RUN_LABEL, load_arms, run_directory
from sustaindiffusion.local.study import expand as expand_study
from sustaindiffusion.local.study_runs import local_runs
from sustaindiffusion.local.summary import facts, front_rows
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.loop import Step
from sustaindiffusion.search.payback import payback
from sustaindiffusion.search.prompt_counts import verdict

EXIT_INVALID = 2
EXIT_INTERRUPTED = 130

console = Console(stderr=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sustaindiffusion", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check a spec with the API server's rules")
    validate.add_argument("spec", type=Path)
    run = commands.add_parser("run", help="run a search on this machine")
    run.add_argument("spec", type=Path)
    run.add_argument("--out", type=Path, default=None, help="output directory (default: out/<search name>)")
    run.add_argument("--device", default="auto", help="worker device: auto, cpu, cuda or cuda:N")
    report = commands.add_parser("report", help="plots, an HTML report and exports of a search")
    report.add_argument("directory", type=Path, nargs="?", help="a local search's output directory")
    report.add_argument("--search", help="a SustainSearch in a cluster, instead of a directory")
    add_cluster_options(report, "the SustainSearch's namespace")
    report.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report directory (default: DIR/report, or out/<search>/report)",
    )
    report.add_argument(
        "--audit", type=Path, default=None, help="an audit set with its score (default: DIR/audit, if scored)"
    )
    export = commands.add_parser("export-profile", help="write one configuration as a generation profile")
    export.add_argument("directory", type=Path)
    choice = export.add_mutually_exclusive_group(required=True)
    choice.add_argument("--candidate", help="a front candidate id")
    choice.add_argument("--rule", help="knee, or least-energy[:gb<=X,eb<=Y,q>=Z]")
    export.add_argument(
        "--out", type=Path, default=None, help="profile file (default: DIR/profile-<id>.json)"
    )
    export.add_argument(
        "--audit", type=Path, default=None, help="an audit set with its score (default: DIR/audit, if scored)"
    )
    study = commands.add_parser("study", help="the arms of a study, each run several times")
    steps = study.add_subparsers(dest="step", required=True)
    expand = steps.add_parser(
        "expand", help="print one SustainSearch per arm and run, for kubectl apply -f -"
    )
    run_study = steps.add_parser("run", help="run every arm and run on this machine, one after another")
    for step in (expand, run_study):
        step.add_argument("directory", type=Path, help="a directory of arm manifests (*.yaml)")
        step.add_argument("--runs", type=int, default=10, help="runs per arm, seeds 0..N-1 (default 10)")
        step.add_argument("--study", default=None, help="the study's name (default: the directory's)")
    run_study.add_argument("--out", type=Path, default=None, help="output directory (default: out/<study>)")
    run_study.add_argument("--device", default="auto", help="worker device: auto, cpu, cuda or cuda:N")
    analyze = commands.add_parser("analyze", help="a study's runs: measures per arm and their statistics")
    analyze.add_argument(
        "directory", type=Path, nargs="?", help="a study's output directory (ARM/run-N inside)"
    )
    analyze.add_argument("--study", help="a study's SustainSearches in a cluster (by label), instead")
    add_cluster_options(analyze, "the study's namespace")
    analyze.add_argument("--reference", default=None, help="the arm the others are tested against")
    analyze.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: DIR/analysis, or out/<study>/analysis)",
    )
    analyze.add_argument(
        "--compare-paper", action="store_true", help="print the paper's published means beside the study's"
    )
    audit_commands.add_parser(commands)
    return parser


def analyze(args: argparse.Namespace) -> int:
    from sustaindiffusion.local.analysis import RunSummary  # noqa: PLC0415 - pandas, scipy, matplotlib
    from sustaindiffusion.local.analysis_console import show  # noqa: PLC0415
    from sustaindiffusion.local.analysis_output import Analysis  # noqa: PLC0415

    if (args.directory is None) == (args.study is None):
        console.print("[red]analyze: give a study's output directory or --study NAME, not both[/red]")
        return EXIT_INVALID
    try:
        if args.study:
            from sustaindiffusion.local.cluster import cluster_runs  # noqa: PLC0415

            where = f"the study {args.study} in namespace {args.namespace}"
            found = cluster_runs(args.study, args.namespace, args.kubeconfig)
            target = args.out or Path("out") / args.study / "analysis"
        else:
            where = str(args.directory)
            found = local_runs(args.directory)
            target = args.out or args.directory / "analysis"
    except (StoreError, LookupError) as error:
        console.print(f"[red]analyze: {error}[/red]")
        return EXIT_INVALID
    for source in found.unfinished:
        console.print(f"[yellow]{source}: not finished; left out[/yellow]", soft_wrap=True)
    if not found.finished:
        expected = "labelled SustainSearches" if args.study else "ARM/run-N directories"
        console.print(f"[red]analyze: no finished run in {where} (expected {expected})[/red]")
        return EXIT_INVALID
    runs = [RunSummary.of(run.arm, run.run, run.engine) for run in found.finished]
    reference = args.reference or sorted({run.arm for run in runs})[0]
    try:
        analysis = Analysis.of(runs, reference, compare_paper=args.compare_paper)
    except LookupError as error:
        console.print(f"[red]analyze: {error}[/red]")
        return EXIT_INVALID
    written = analysis.write(target)
    show(analysis, len(runs), Console(width=max(console.width, 160)))
    console.print(
        f"each arm against {reference}: {target / 'tests.csv'}; in {target}: "
        + ", ".join(path.name for path in written),
        soft_wrap=True,
    )
    return 0


def study(args: argparse.Namespace) -> int:
    name = args.study or args.directory.resolve().name.lower()
    try:
        arms = load_arms(args.directory)
        manifests = expand_study(arms, name, args.runs)
    except ManifestError as error:
        console.print(f"[red]{error}[/red]")
        return EXIT_INVALID
    if args.step == "expand":
        sys.stdout.write(yaml.safe_dump_all(manifests, sort_keys=False))
        return 0
    out = args.out or Path("out") / name
    paths = {arm.name: arm.path for arm in arms}
    with stop_requests() as stop:  # between runs; each run handles Ctrl-C itself
        for manifest in manifests:
            labels = manifest["metadata"]["labels"]
            arm, number = labels[ARM_LABEL], int(labels[RUN_LABEL])
            directory = run_directory(out, arm, number)
            code = EXIT_INTERRUPTED
            if not stop.requested:
                console.print(f"study {name}: arm {arm}, run {number} in {directory}", soft_wrap=True)
                manifest_of_run = validate_manifest(manifest, source=str(paths[arm]))
                code = run(paths[arm], directory, args.device, manifest_of_run)
            if code != 0:
                console.print(
                    f"[red]study {name}: arm {arm}, run {number} ended with exit code {code}; "
                    "run the same command again to resume[/red]"
                )
                return code
    console.print(f"study {name}: {len(manifests)} runs complete in {out}", soft_wrap=True)
    return 0


def validate(spec_file: Path) -> int:
    try:
        manifest = load_manifest(spec_file)
    except ManifestError as error:
        console.print(f"[red]{error}[/red]")
        return EXIT_INVALID
    console.print(f"{spec_file}: valid SustainSearch [bold]{manifest.name}[/bold]")
    return 0


def run(spec_file: Path, out: Path | None, device: str, manifest: SustainSearchManifest | None = None) -> int:
    """Run the search of `spec_file` (or `manifest`, a study's run of it: relative model paths
    are still relative to `spec_file`'s directory)."""
    if manifest is None:
        try:
            manifest = load_manifest(spec_file)
        except ManifestError as error:
            console.print(f"[red]{error}[/red]")
            return EXIT_INVALID
    with stop_requests() as stop:  # from here on, Ctrl-C stops the run cleanly
        return _run(manifest, spec_file, RunStore(out or Path("out") / manifest.name), device, stop)


def _run(
    manifest: SustainSearchManifest, spec_file: Path, store: RunStore, device: str, stop: StopRequest
) -> int:
    try:
        runner = LocalRunner(manifest, spec_file, store, device)
        runner.engine.pending()  # replays the archive now: a store that cannot be replayed stops here
        replayed = len(store.records())  # every record, a screening pass's and validation's too
    except StoreError as error:
        console.print(f"[red]{error}[/red]")
        return EXIT_INVALID
    if replayed:
        console.print(
            f"resuming from {store.directory}: {replayed} results replayed, none evaluated again",
            soft_wrap=True,  # a path broken across lines cannot be copied
        )
    algorithm = manifest.spec.algorithm
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[energy]}"),
    )
    with Progress(*columns, console=console) as bars:
        generations = bars.add_task(
            "generations", total=algorithm.generations + 1, completed=runner.engine.generation, energy=""
        )
        candidates: dict[int, TaskID] = {}

        def show(engine: SearchEngine, step: Step) -> None:
            observation = step.observation
            if observation.generation not in candidates and observation.candidates:
                for task in candidates.values():
                    bars.remove_task(task)
                candidates.clear()
                label = "baseline" if observation.generation == 0 else f"generation {observation.generation}"
                candidates[observation.generation] = bars.add_task(
                    f"  {label} candidates", total=observation.candidates, energy=""
                )
            if observation.generation in candidates:
                done = observation.candidates - (0 if observation.advanced else observation.running)
                bars.update(candidates[observation.generation], completed=done)
            for event in step.events:
                if event.type == "Warning":
                    console.print(f"[yellow]{event.reason}: {event.message}[/yellow]")
            energy = f"{engine.total_energy_joules:,.0f} J so far"
            hypervolume = (
                f", hypervolume {engine.hypervolume_history[-1]:.4f}" if engine.hypervolume_history else ""
            )
            bars.update(generations, completed=engine.generation, energy=energy + hypervolume)

        try:
            step = runner.run(RunProgress(show), stop)
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once
            step = None
            runner.interrupt()
    if step is None:
        console.print(
            f"[yellow]interrupted; run the same command again to resume from {store.directory}[/yellow]",
            soft_wrap=True,
        )
        return EXIT_INTERRUPTED
    _print_summary(runner.engine, store)
    return 0 if step.status.phase.value == "Succeeded" else 1


def _print_summary(engine: SearchEngine, store: RunStore) -> None:
    console.print(
        f"[bold]{engine.outcome().message}[/bold]; {engine.evaluations} evaluations, "
        f"{engine.failures} failed; output in {store.directory}"
    )
    for line in facts(engine):
        console.print(f"  {line}")
    names = [o.name.value for o in engine.spec.objectives]
    table = Table(
        title="Pareto front (and baselines), in-sample: the search's own prompts and seeds (optimistic); "
        "biases with their 95% interval; in brackets: in-sample change against the defaults"
    )
    for column in ("candidate", "steps", "guidance", "keywords +/-", "weight", *names, "quality", "valid"):
        table.add_column(column)
    for candidate, result in engine.baselines():
        if result is not None and result.metrics is not None:
            values = [f"{result.metrics.objective(o.name):.4g}" for o in engine.spec.objectives]
            table.add_row(
                f"[dim]{candidate.baseline}[/dim]",
                "default",
                "default",
                "-",
                "-",
                *values,
                f"{result.metrics.quality:.4g}",
                _share(result.metrics.valid_share),
            )
    for row in front_rows(engine):
        point, settings = row.point, row.point.candidate.settings
        cells = [row.cell(name, value) for name, value in point.objectives.items()]
        table.add_row(
            point.candidate.candidate_id,
            str(settings.inference_steps),
            str(settings.guidance_scale),
            f"{len(settings.positive_keywords)}/{len(settings.negative_keywords)}",
            str(settings.prompt_weight),
            *cells,
            f"{point.metrics.quality:.4g}",
            _share(point.metrics.valid_share),
        )
    Console(width=max(console.width, 160)).print(table)


def _share(share: float | None) -> str:
    return f"{share:.0%}" if share is not None else "-"


def _engine_of(directory: Path) -> tuple[str, SearchEngine]:
    store = RunStore(directory)
    name, spec = store.load_spec()
    return name, SearchEngine.from_archive(spec, store.records())


def export_profile(directory: Path, rule: str, out: Path | None, audit: Path | None = None) -> int:
    try:
        _, engine = _engine_of(directory)
        selection = select(engine, rule)
        findings = find(directory, audit)
    except (StoreError, SelectionError, FindingsError) as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        return EXIT_INVALID
    candidate_id = selection.point.candidate.candidate_id
    resolved = _resolved_settings(directory, candidate_id)
    held_out = held_out_values(engine, candidate_id)
    bill = payback(engine, candidate_id)
    document = profile(
        engine.spec.model,
        selection.point.candidate.settings,
        selection,
        resolved,
        held_out,
        bill.as_document(),
        findings.for_profile(candidate_id) if findings is not None else None,
    )
    path = out or directory / f"profile-{candidate_id}.json"
    path.write_text(json.dumps(document, indent=2))
    snippet = path.with_suffix(".py")
    snippet.write_text(diffusers_snippet(document))
    console.print(f"wrote {path} ({selection.rule}) and {snippet}")
    if held_out is None:
        console.print(
            "[yellow]no held-out validation of this point: its values are in-sample (the best of many "
            "noisy draws on the search's own seeds), so expect them to be optimistic; add "
            "spec.validation to check them on fresh prompts and seeds[/yellow]"
        )
    else:
        console.print(held_out_table(held_out))
        counts = verdict(held_out.get("wins", 0), held_out.get("pareto", 0), held_out.get("losses", 0))
        console.print(f"per held-out prompt against the defaults: {counts.line()}", soft_wrap=True)
    console.print(bill.describe())
    if findings is not None:
        console.print(_audit_line(document["audit"], findings.source), soft_wrap=True)
    return 0


def _audit_line(entry: dict[str, object] | None, source: str) -> str:
    if entry is None:
        return (
            f"[yellow]the audit in {source} does not cover this point "
            "(it audits the defaults and the front)[/yellow]"
        )
    parts = []
    for name in ("genderBias", "ethnicBias"):
        bias = entry[name]
        assert isinstance(bias, dict)
        value = "-" if bias["corrected"] is None else f"{bias['corrected']:.3g}"
        verdict = "" if bias["conclusive"] else " (too small to conclude)"
        parts.append(f"{name} {bias['raw']:.3g} by the detector, {value} corrected by people{verdict}")
    return f"audit ({source}): " + "; ".join(parts)


def _resolved_settings(directory: Path, candidate_id: str) -> dict[str, object]:
    """Steps and guidance as the worker used them (pipeline defaults filled in), from its artifacts."""
    for summary in (directory / "artifacts").glob(f"{ALL_GENERATIONS}/{candidate_id}/candidate.json"):
        resolved: dict[str, object] = json.loads(summary.read_text()).get("resolved", {})
        return resolved
    return {}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "validate":
        return validate(args.spec)
    if args.command == "run":
        return run(args.spec, args.out, args.device)
    if args.command == "study":
        return study(args)
    if args.command == "analyze":
        return analyze(args)
    if args.command == "export-profile":
        return export_profile(args.directory, args.candidate or args.rule, args.out, args.audit)
    if args.command == "audit":
        return audit_commands.run(args)
    return report(args)


def report(args: argparse.Namespace) -> int:
    from sustaindiffusion.local.report import write_report  # noqa: PLC0415 - matplotlib only when needed

    if (args.directory is None) == (args.search is None):
        console.print("[red]report: give a local output directory or --search NAME, not both[/red]")
        return EXIT_INVALID
    try:
        if args.search:
            from sustaindiffusion.local.cluster import audit_in_cluster, read_search  # noqa: PLC0415

            search = read_search(args.search, args.namespace, args.kubeconfig)
            name, engine = args.search, search.engine()
            target = args.out or Path("out") / name / "report"
            findings = find(None, args.audit, args.search)
            if args.audit is None:
                # The score `audit score` wrote beside the search, if it was audited.
                stored = audit_in_cluster(search)
                findings = from_cluster(*stored, args.search, search.ref.uid) if stored else None
            elif findings is not None and findings.document["run"].get("uid") not in (None, search.ref.uid):
                raise FindingsError(
                    f"{findings.source} audits an earlier search named {args.search} (another uid), not "
                    "this one"
                )
        else:
            name, engine = _engine_of(args.directory)
            target = args.out or args.directory / "report"
            findings = find(args.directory, args.audit, args.search)
    except (StoreError, LookupError, FindingsError) as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        return EXIT_INVALID
    written = write_report(name, engine, args.directory, target, findings)
    audited = f" (with the audit in {findings.source})" if findings is not None else ""
    console.print(f"report: {written}{audited}", soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
