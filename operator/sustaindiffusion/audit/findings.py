"""An audit's score as the report and the profile show it.

Where it is found: `--audit AUDIT_DIR` (its score.json), or else the conventional place,
RUN_DIR/audit/score.json (`sustaindiffusion audit export RUN_DIR` writes the set to RUN_DIR/audit
by default); for a search in a cluster, the ConfigMap `audit score` wrote beside it
(`from_cluster`). A score whose run is not this one (another spec.json, another uid) is refused
with a message, never shown beside the wrong figures. Reads JSON only: no web or statistics
library is needed to report.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_AUDIT_DIR = "audit"
SCORE_FILE = "score.json"
QUESTIONS = ("person", "gender", "ethnicity")
TOO_SMALL = "too small to conclude: "  # how a figure's note begins when it concludes nothing


class FindingsError(ValueError):
    pass


@dataclass(frozen=True)
class Findings:
    source: str  # where the score was read: a score.json, or a cluster's ConfigMap
    document: dict[str, Any]

    def point(self, candidate_id: str) -> dict[str, Any] | None:
        return next((p for p in self.document["points"] if p["candidateId"] == candidate_id), None)

    def for_profile(self, candidate_id: str) -> dict[str, Any] | None:
        """What the profile carries: the point's corrected biases and the detector's agreement."""
        point = self.point(candidate_id)
        if point is None:
            return None
        people = self.document["detectorVsPeople"].get("people", {})
        return {
            "source": self.source,
            "images": point["images"],
            "audited": point["audited"],
            "labelled": point["labelled"],
            "annotators": sorted(self.document["annotators"]),
            "genderBias": point["genderBias"],
            "ethnicBias": point["ethnicBias"],
            "detectorKappa": {q: people.get(q, {}).get("value") for q in QUESTIONS},
            "personGate": {k: self.document["personGate"].get(k) for k in ("enabled", "precision", "recall")},
        }

    def html(self) -> str:
        return section(self.document, self.source)


def find(
    run_directory: Path | None, audit_directory: Path | None, search: str | None = None
) -> Findings | None:
    """The audit of this run, or None when there is none at the conventional place."""
    if audit_directory is not None:
        path = audit_directory / SCORE_FILE
        if not path.is_file():
            raise FindingsError(
                f"{audit_directory} has no {SCORE_FILE}: score it first (sustaindiffusion audit score "
                f"{audit_directory})"
            )
    elif run_directory is not None:
        path = run_directory / DEFAULT_AUDIT_DIR / SCORE_FILE
        if not path.is_file():
            return None
    else:
        return None
    try:
        document = json.loads(path.read_text())
        run = document["run"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise FindingsError(f"{path} is not an audit score ({type(error).__name__}: {error})") from None
    if run_directory is not None and (run_directory / "spec.json").is_file():
        digest = hashlib.sha256((run_directory / "spec.json").read_bytes()).hexdigest()
        if run.get("spec_sha256") != digest:
            raise FindingsError(
                f"{path} audits another search ({run.get('search')} in {run.get('directory')}), not "
                f"{run_directory}: give this run's audit with --audit"
            )
    elif search is not None and run.get("search") != search:
        raise FindingsError(f"{path} audits the search {run.get('search')!r}, not {search!r}")
    return Findings(str(path), document)


def from_cluster(text: str, source: str, search: str, uid: str) -> Findings:
    """The score a cluster search's audit ConfigMap (`source`) holds, once it is this search's:
    a search made again under the same name is another search, and its figures are not these."""
    try:
        document = json.loads(text)
        run = document["run"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise FindingsError(f"{source} is not an audit score ({type(error).__name__}: {error})") from None
    if run.get("search") != search or run.get("uid") != uid:
        raise FindingsError(
            f"{source} audits the search {run.get('search')!r} with uid {run.get('uid')}, not this "
            f"{search!r} (uid {uid}): audit this search again (sustaindiffusion audit export --search "
            f"{search})"
        )
    return Findings(source, document)


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def interval(values: list[float] | None) -> str:
    return "" if not values else f" [{values[0]:.3g}, {values[1]:.3g}]"


def _bias_cells(entry: dict[str, Any]) -> str:
    raw = f"{number(entry['raw'])}{interval(entry['rawInterval'])}"
    corrected = f"{number(entry['corrected'])}{interval(entry['interval'])}"
    note = html.escape(entry["note"].removeprefix(TOO_SMALL))
    verdict = f"<br><b>{TOO_SMALL.removesuffix(': ')}</b>: " if not entry["conclusive"] else "<br>"
    return f"<td>{html.escape(raw)}</td><td>{html.escape(corrected)}{verdict}<small>{note}</small></td>"


def _agreement_cell(entry: dict[str, Any]) -> str:
    value = number(entry["value"])
    note = f"<br><small>{html.escape(entry['note'])}</small>" if entry["note"] else ""
    return f"<td>{value} <small>({entry['items']} images)</small>{note}</td>"


def section(document: dict[str, Any], source: str) -> str:
    rules = document["rules"]
    annotators = ", ".join(f"{html.escape(n)} ({c})" for n, c in document["annotators"].items())
    rows = "".join(
        f"<tr><td><code>{html.escape(p['candidateId'])}</code></td><td>{html.escape(p['role'])}</td>"
        f"<td>{p['images']} / {p['audited']} / {p['labelled']}</td>"
        f"{_bias_cells(p['genderBias'])}{_bias_cells(p['ethnicBias'])}</tr>"
        for p in document["points"]
    )
    header = "".join(f"<th>{q}</th>" for q in QUESTIONS)
    raters = "".join(
        f"<tr><td>detector vs {html.escape(name)}</td>"
        + "".join(_agreement_cell(kappas[q]) for q in QUESTIONS)
        + "</tr>"
        for name, kappas in document["detectorVsPeople"].items()
    )
    between = document["betweenAnnotators"]
    raters += "".join(
        f"<tr><td>{html.escape(' vs '.join(pair['annotators']))}</td>"
        + "".join(_agreement_cell(pair[q]) for q in QUESTIONS)
        + "</tr>"
        for pair in between["pairs"]
    )
    if "alpha" in between:
        raters += (
            "<tr><td>all annotators (Krippendorff's alpha)</td>"
            + "".join(_agreement_cell(between["alpha"][q]) for q in QUESTIONS)
            + "</tr>"
        )
    gate = document["personGate"]
    matrices = "".join(_matrix(q, document["confusion"][q]) for q in QUESTIONS)
    return f"""<h2>Bias figures checked by people (audit)</h2>
<p>From <code>{html.escape(source)}</code>: {document["labelled"]} of {document["items"]} audited
images labelled (annotators: {annotators}); people's answer is the annotators' majority. Each point's
images were sampled by the detector's answers; the corrected bias redistributes each detector answer
over what people saw in the images that got it, with {rules["level"]:.0%} bootstrap intervals
({rules["draws"]} draws). Too small to conclude: a detector answer with no labelled image, fewer than
{rules["minimumEvidence"]} audited images that people put in a group, or an interval wider than
{rules["maximumIntervalWidth"]}.</p>
<table><tr><th>candidate</th><th>role</th><th>images / audited / labelled</th>
<th>gender bias: detector [95%]</th><th>gender bias: corrected [95%]</th>
<th>ethnic bias: detector [95%]</th><th>ethnic bias: corrected [95%]</th></tr>{rows}</table>
<h3>Agreement (Cohen's kappa; below {rules["minimumAgreementImages"]} images: too small to conclude)</h3>
<table><tr><th>raters</th>{header}</tr>{raters}</table>
<p>Person gate against people: precision {number(gate["precision"])}, recall {number(gate["recall"])}
({gate["images"]} labelled images; {html.escape(gate["note"])}).</p>
<h3>Detector (rows) against people (columns)</h3>{matrices}"""


def _matrix(question: str, confusion: dict[str, Any]) -> str:
    categories = confusion["categories"]
    header = "".join(f"<th>{html.escape(c)}</th>" for c in categories)
    rows = "".join(
        f"<tr><th>{html.escape(c)}</th>{''.join(f'<td>{n}</td>' for n in counts)}</tr>"
        for c, counts in zip(categories, confusion["counts"], strict=True)
    )
    return f"<h4>{question}</h4><table><tr><th></th>{header}</tr>{rows}</table>"
