"""`sustaindiffusion audit`: export a sample of a finished search's images for people to label,
serve the labelling page, and score the labels against the detector.

    sustaindiffusion audit export RUN_DIR [--out AUDIT_DIR] [--per-stratum 10] [--seed 0]
    sustaindiffusion audit export --search NAME [--namespace NS] [--kubeconfig FILE] [--out AUDIT_DIR]
    sustaindiffusion audit serve AUDIT_DIR --annotator ID [--host 127.0.0.1] [--port 8765]
    sustaindiffusion audit score AUDIT_DIR [--draws 2000] [--kubeconfig FILE] [--no-publish]

AUDIT_DIR defaults to RUN_DIR/audit, where `sustaindiffusion report RUN_DIR` and `export-profile`
find the score (or give them --audit AUDIT_DIR). A search in a cluster (`--search NAME`) is read
through its artifacts claim: a short-lived pod in its namespace mounts the claim read-only and the
sample is copied out through exec (rights needed: create, get and delete pods, create pods/exec),
into out/NAME/audit by default. Scoring such a set also writes the score into the ConfigMap
NAME-audit beside the search (owned by it), where `sustaindiffusion report --search NAME` finds it.
The page and the statistics need the audit extra: pip install 'sustaindiffusion[audit]'.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sustaindiffusion.api.artifacts import ALL_GENERATIONS
from sustaindiffusion.api.bias import ETHNIC_GROUPS
from sustaindiffusion.api.results import Metrics
from sustaindiffusion.api.task import Part
from sustaindiffusion.audit import auditset
from sustaindiffusion.audit.findings import DEFAULT_AUDIT_DIR, QUESTIONS, interval, number
from sustaindiffusion.audit.labels import LabelError, check_annotator
from sustaindiffusion.audit.sample import DEFAULT_PER_STRATUM, Sample, draw
from sustaindiffusion.audit.source import NO_PERSON, Point, PointImages, SourceError, images_of, saves_images
from sustaindiffusion.local.cluster_options import add_cluster_options
from sustaindiffusion.local.store import RunStore, StoreError
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.reference import DEFAULTS_ID

EXIT_INVALID = 2
DEFAULT_PORT = 8765

console = Console(stderr=True)


def add_parser(commands: Any) -> None:
    audit = commands.add_parser(
        "audit",
        help="check the bias figures against people: export a sample, label it, score it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = audit.add_subparsers(dest="step", required=True)
    export = steps.add_parser("export", help="a stratified sample of a finished search's saved images")
    export.add_argument("directory", type=Path, nargs="?", help="a local search's output directory")
    export.add_argument("--search", help="a SustainSearch in a cluster, read through its artifacts claim")
    add_cluster_options(export, "the search's namespace (with --search)")
    export.add_argument(
        "--reader-image",
        default=None,
        help="image of the pod that reads the claim; it needs python3 (default: the search's worker "
        "image, spec.execution.image)",
    )
    export.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"audit set (default: DIR/{DEFAULT_AUDIT_DIR}, or out/NAME/{DEFAULT_AUDIT_DIR} with --search)",
    )
    export.add_argument(
        "--per-stratum",
        type=int,
        default=DEFAULT_PER_STRATUM,
        help="images drawn per point and detector answer (person/gender/ethnicity); "
        f"default {DEFAULT_PER_STRATUM}",
    )
    export.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    serve = steps.add_parser("serve", help="the labelling page, for one annotator")
    serve.add_argument("directory", type=Path, help="an audit set (from audit export)")
    serve.add_argument("--annotator", required=True, help="who labels: each annotator has a label file")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1 only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    score = steps.add_parser("score", help="agreement and corrected biases, into AUDIT_DIR/score.json")
    score.add_argument("directory", type=Path, help="an audit set with labels")
    score.add_argument("--draws", type=int, default=2000, help="bootstrap draws (default 2000)")
    score.add_argument("--kubeconfig", type=Path, default=None, help="for a cluster search's set: kubeconfig")
    score.add_argument(
        "--no-publish",
        action="store_true",
        help="for a cluster search's set: keep the score in AUDIT_DIR only, no ConfigMap",
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.step == "export":
            return export(args)
        if args.step == "serve":
            return serve(args.directory, args.annotator, args.host, args.port)
        return score(args.directory, args.draws, args.kubeconfig, not args.no_publish)
    except ImportError as error:
        console.print(
            f"[red]audit: {error.name} is missing: install the audit extra, "
            "pip install 'sustaindiffusion[audit]'[/red]"
        )
        return EXIT_INVALID


def _points(engine: SearchEngine) -> dict[Point, Metrics]:
    """The defaults and the front points, with the metrics the product reports for each."""
    front = {p.candidate.candidate_id: p.metrics for p in engine.front()}
    defaults = engine.defaults_metrics()
    points: dict[Point, Metrics] = {}
    if defaults is not None:
        points[Point(DEFAULTS_ID, "defaults, front" if DEFAULTS_ID in front else "defaults")] = defaults
    points.update({Point(c, "front"): m for c, m in front.items() if c != DEFAULTS_ID})
    return points


def _counted_as_reported(strata: dict[str, int], metrics: Metrics) -> bool:
    """Whether the saved records count as the point's result does (human, gender and group counts)."""
    answers = [stratum.split("/") for stratum in strata if stratum != NO_PERSON]
    sizes = [n for stratum, n in strata.items() if stratum != NO_PERSON]

    def count(position: int, value: str) -> int:
        return sum(n for parts, n in zip(answers, sizes, strict=True) if parts[position] == value)

    if not metrics.counted:
        return True
    return (
        sum(sizes) == metrics.human_images
        and count(1, "woman") == metrics.female_images
        and count(1, "man") == metrics.male_images
        and [count(2, group) for group in ETHNIC_GROUPS] == metrics.ethnic_counts()
    )


@dataclass(frozen=True)
class Exported:
    name: str
    target: Path
    points: dict[Point, Metrics]
    found: list[PointImages]
    sample: Sample


def export(args: argparse.Namespace) -> int:
    if (args.directory is None) == (args.search is None):
        console.print(
            "[red]audit export: give a local search's output directory or --search NAME, not both[/red]"
        )
        return EXIT_INVALID
    if args.per_stratum < 1:
        console.print("[red]audit export: --per-stratum must be at least 1[/red]")
        return EXIT_INVALID
    default = Path("out") / args.search if args.search is not None else args.directory
    target: Path = args.out or default / DEFAULT_AUDIT_DIR
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        console.print(
            f"[red]audit export: {target} already exists and is not empty: an audit set is never "
            "overwritten (labels may be in it); choose another --out[/red]",
            soft_wrap=True,
        )
        return EXIT_INVALID
    try:
        exported = _export_local(args, target) if args.search is None else _export_cluster(args, target)
    except (StoreError, SourceError, auditset.AuditSetError, LookupError) as error:
        console.print(f"[red]audit export: {error}[/red]", soft_wrap=True)
        return EXIT_INVALID
    if exported is None:
        return EXIT_INVALID
    _show_export(exported, args.per_stratum)
    return 0


def _export_local(args: argparse.Namespace, target: Path) -> Exported | None:
    directory: Path = args.directory
    store = RunStore(directory)
    name, spec = store.load_spec()
    points = _points(SearchEngine.from_archive(spec, store.records()))
    if not points:
        console.print(f"[red]audit export: {directory} has neither evaluated defaults nor a front[/red]")
        return None
    found = images_of(directory, spec, list(points))
    sample = draw(found, args.per_stratum, args.seed)
    run_identity = auditset.RunIdentity(
        search=name, directory=str(directory.resolve()), spec_sha256=auditset.spec_digest(directory)
    )
    gate = spec.scoring.human_filter.enabled
    auditset.write(target, sample, run_identity, args.seed, args.per_stratum, gate)
    return Exported(name, target, points, found, sample)


def _export_cluster(args: argparse.Namespace, target: Path) -> Exported | None:
    # The Kubernetes client only for a cluster search: a local audit needs none.
    from kubernetes import client  # noqa: PLC0415

    from sustaindiffusion.kube.claim_reader import ClaimReadError, claim_reader  # noqa: PLC0415
    from sustaindiffusion.local.cluster import read_search  # noqa: PLC0415

    search = read_search(args.search, args.namespace, args.kubeconfig)
    spec, where = search.spec, f"{search.ref.namespace}/{search.ref.name}"
    artifacts = spec.execution.artifacts
    if artifacts is None or not saves_images(spec):
        raise SourceError(
            f"the SustainSearch {where} did not keep its images (spec.execution.artifacts "
            f"{'is absent' if artifacts is None else 'has saveImages: false'}), so there is nothing for "
            "people to look at: give the search an artifacts claim (spec.execution.artifacts: {claimName: "
            "..., saveImages: true}) and run it again under a new name"
        )
    points = _points(search.engine())
    if not points:
        console.print(f"[red]audit export: {where} has neither evaluated defaults nor a front yet[/red]")
        return None
    held_out: dict[int, set[str]] = {}
    for record in search.records:
        if record.part is Part.VALIDATION:
            held_out.setdefault(record.generation, set()).add(record.result.candidate_id)
    image = args.reader_image or spec.execution.image
    with tempfile.TemporaryDirectory(prefix="sustaindiffusion-audit-") as staging:
        local_root = Path(staging) / "artifacts"
        try:
            with claim_reader(client.CoreV1Api(search.api), search.ref, spec, image) as reader:
                listed = reader.list([f"{ALL_GENERATIONS}/{point.candidate_id}/*" for point in points])
                reader.fetch([p for p in listed if Path(p).suffix == ".jsonl"], local_root)
                present = {local_root / p for p in listed}
                found = images_of(Path(staging), spec, list(points), held_out, saved=present.__contains__)
                sample = draw(found, args.per_stratum, args.seed)
                sampled = [str(item.image.path.relative_to(local_root)) for item in sample.items]
                reader.fetch(sampled, local_root)
        except ClaimReadError as error:
            raise LookupError(str(error)) from None
        root = f"{artifacts.path}/{search.ref.name}"
        run_identity = auditset.RunIdentity(
            search=search.ref.name,
            directory=f"claim {artifacts.claim_name}:{root}",
            spec_sha256=auditset.spec_document_digest(search.spec_document),
            namespace=search.ref.namespace,
            uid=search.ref.uid,
        )
        auditset.write(
            target,
            sample,
            run_identity,
            args.seed,
            args.per_stratum,
            spec.scoring.human_filter.enabled,
            source_of=lambda path: f"claim {artifacts.claim_name}:{root}/{path.relative_to(local_root)}",
        )
    return Exported(search.ref.name, target, points, found, sample)


def _show_export(exported: Exported, per_stratum: int) -> None:
    sample = exported.sample
    table = Table(
        title=f"audit set of {exported.name}: {len(sample.items)} images, up to {per_stratum} per stratum"
    )
    for column in ("candidate", "role", "images", "detector answers (strata)", "sampled"):
        table.add_column(column)
    for point in exported.found:
        candidate = point.point.candidate_id
        sampled = sum(1 for item in sample.items if item.image.candidate_id == candidate)
        table.add_row(
            candidate,
            point.point.role,
            str(len(point.images)),
            str(len(sample.strata[candidate])),
            str(sampled),
        )
        if not _counted_as_reported(sample.strata[candidate], exported.points[point.point]):
            console.print(
                f"[yellow]{candidate}: its saved image records do not count as its result does (records "
                "missing?); the audit covers the saved records[/yellow]"
            )
    Console(width=max(console.width, 120)).print(table)
    console.print(
        f"wrote {exported.target}; next: sustaindiffusion audit serve {exported.target} --annotator ID",
        soft_wrap=True,
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(directory: Path, annotator: str, host: str, port: int) -> int:
    import uvicorn  # noqa: PLC0415

    from sustaindiffusion.audit.page import create_app  # noqa: PLC0415 - starlette: the audit extra

    try:
        check_annotator(annotator)
        app = create_app(directory, annotator)
    except (auditset.AuditSetError, LabelError, ValueError) as error:
        console.print(f"[red]audit serve: {error}; not starting[/red]", soft_wrap=True)
        return EXIT_INVALID
    if not _loopback(host):
        console.print(
            f"[yellow]audit serve: listening on {host}, reachable from other machines; the page has no "
            "log-in: anyone who reaches it can label in this annotator's name[/yellow]"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        console.print(f"[red]audit serve: cannot listen on {host}:{port} ({error.strerror})[/red]")
        sock.close()
        return EXIT_INVALID
    sock.listen(128)
    bound = sock.getsockname()[1]
    page = app.state.page
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    console.print(
        f"labelling page for {annotator}: http://{shown}:{bound}/ ({page.store.complete()} of "
        f"{len(page.manifest.items)} images labelled; labels in {page.store.path}); Ctrl-C stops it",
        soft_wrap=True,
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
    return 0


def score(directory: Path, draws: int, kubeconfig: Path | None = None, publish: bool = True) -> int:
    from sustaindiffusion.audit.score import ScoreError, write  # noqa: PLC0415 - statsmodels: the audit extra
    from sustaindiffusion.audit.score import score as compute  # noqa: PLC0415

    if draws < 100:
        console.print("[red]audit score: --draws must be at least 100[/red]")
        return EXIT_INVALID
    try:
        document = compute(directory, draws)
    except (auditset.AuditSetError, LabelError, ScoreError) as error:
        console.print(f"[red]audit score: {error}[/red]", soft_wrap=True)
        return EXIT_INVALID
    path = write(directory, document)
    show(document)
    run = auditset.load_manifest(directory).run
    if not run.in_cluster:
        console.print(
            f"wrote {path}; `sustaindiffusion report RUN_DIR --audit {directory}` shows it", soft_wrap=True
        )
        return 0
    report = f"sustaindiffusion report --search {run.search} --namespace {run.namespace}"
    if not publish:
        console.print(f"wrote {path} (not published: --no-publish); `{report} --audit {directory}` shows it")
        return 0
    from sustaindiffusion.local.cluster import publish_audit  # noqa: PLC0415 - the Kubernetes client

    assert run.namespace is not None
    assert run.uid is not None
    try:
        config_map = publish_audit(run.search, run.namespace, run.uid, document, kubeconfig)
    except (LookupError, ValueError) as error:
        console.print(
            f"[red]audit score: wrote {path}, but not into the cluster: {error}; score again to retry, "
            f"or show it with `{report} --audit {directory}`[/red]",
            soft_wrap=True,
        )
        return 1
    console.print(f"wrote {path} and the ConfigMap {config_map}; `{report}` shows it", soft_wrap=True)
    return 0


def _figure(entry: dict[str, Any]) -> str:
    corrected = f"{number(entry['corrected'])}{interval(entry['interval'])}"
    return corrected if entry["conclusive"] else f"{corrected}\n{entry['note']}"


def show(document: dict[str, Any]) -> None:
    wide = Console(width=max(console.width, 150))
    counts = ", ".join(f"{name} {count}" for name, count in document["annotators"].items())
    wide.print(f"{document['labelled']} of {document['items']} images labelled (complete images: {counts})")
    points = Table(title="biases: the detector's figure and the figure corrected by people's labels [95%]")
    for column in ("candidate", "role", "images/audited/labelled", "gender: detector", "gender: corrected",
                   "ethnic: detector", "ethnic: corrected"):  # fmt: skip
        points.add_column(column)
    for point in document["points"]:
        gender, ethnic = point["genderBias"], point["ethnicBias"]
        points.add_row(
            point["candidateId"],
            point["role"],
            f"{point['images']}/{point['audited']}/{point['labelled']}",
            f"{number(gender['raw'])}{interval(gender['rawInterval'])}",
            _figure(gender),
            f"{number(ethnic['raw'])}{interval(ethnic['rawInterval'])}",
            _figure(ethnic),
        )
    wide.print(points)
    agreement = Table(title="agreement: Cohen's kappa (images rated by both)")
    agreement.add_column("raters")
    for question in QUESTIONS:
        agreement.add_column(question)

    def cell(entry: dict[str, Any]) -> str:
        flag = "" if entry["conclusive"] else " *"
        return f"{number(entry['value'])} ({entry['items']}){flag}"

    for name, kappas in document["detectorVsPeople"].items():
        agreement.add_row(f"detector vs {name}", *(cell(kappas[q]) for q in QUESTIONS))
    between = document["betweenAnnotators"]
    for pair in between["pairs"]:
        agreement.add_row(" vs ".join(pair["annotators"]), *(cell(pair[q]) for q in QUESTIONS))
    if "alpha" in between:
        agreement.add_row("all (Krippendorff's alpha)", *(cell(between["alpha"][q]) for q in QUESTIONS))
    wide.print(agreement)
    wide.print("* too small to conclude, or undefined (see score.json)")
    gate = document["personGate"]
    wide.print(
        f"person gate against people: precision {number(gate['precision'])}, recall "
        f"{number(gate['recall'])} ({gate['note']})"
    )
