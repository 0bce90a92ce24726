"""`sustaindiffusion audit score`: the detector against people, people against each other, and each
point's biases corrected for the detector's measured errors, into AUDIT_DIR/score.json.

People's answer for an image is the annotators' majority for each question (a tie: "unclear" for
the person question, "can't tell" for the others); an image counts once at least one annotator
finished it. The detector's answers are compared with each annotator's and with the majority:
person present over every image the rater labelled; gender and ethnicity over the images the rater
says show a person and the detector's gate let through (so the gate's errors and the classifier's
are told apart). Agreements are over the audit sample as drawn (rare answers oversampled); the
person gate's precision and recall weight each audited image by its stratum's size (`N_s / n_s`),
so they estimate the rates over all the points' images.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from sustaindiffusion.api.bias import ETHNIC, ETHNIC_GROUPS, GENDER
from sustaindiffusion.api.intervals import generator
from sustaindiffusion.audit import agreement, correction
from sustaindiffusion.audit.auditset import DetectorAnswers, Manifest, load_detector, verify
from sustaindiffusion.audit.labels import ANNOTATOR, fold, read, write_atomically
from sustaindiffusion.audit.scheme import (
    CANT_TELL,
    ETHNIC_CLASSES,
    ETHNICITY,
    GENDER_CLASSES,
    PERSON,
    UNCLEAR,
    ethnic_class,
    gender_class,
    next_field,
)
from sustaindiffusion.audit.source import NO_PERSON

SCORE_FILE = "score.json"
FORMAT = 1
CONSENSUS = "people"  # the majority's name beside the annotators'

Labels = dict[str, dict[str, str]]  # item -> question -> answer (complete images only)


class ScoreError(ValueError):
    pass


def annotators(directory: Path) -> list[str]:
    return sorted(path.stem for path in (directory / "labels").glob("*.json") if ANNOTATOR.match(path.stem))


def complete_labels(directory: Path, annotator: str, manifest: Manifest) -> Labels:
    digest = (directory / "manifest.sha256").read_text().strip()
    labels = fold(read(directory, annotator, manifest, digest).answers)
    return {item: label for item, label in labels.items() if next_field(label) is None}


def _majority(values: Sequence[str], tie: str) -> str:
    ranked = Counter(values).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return tie
    return ranked[0][0]


def consensus(by_annotator: dict[str, Labels]) -> Labels:
    items = sorted({item for labels in by_annotator.values() for item in labels})
    result: Labels = {}
    for item in items:
        given = [labels[item] for labels in by_annotator.values() if item in labels]
        label = {"person": _majority([g["person"] for g in given], UNCLEAR)}
        if label["person"] != "no":
            for field in ("gender", "ethnicity"):
                answers = [g[field] for g in given if field in g]
                label[field] = _majority(answers, CANT_TELL) if answers else CANT_TELL
        result[item] = label
    return result


# Per question, what two raters said of the images both rated (as the question counts them).
Pairs = dict[str, tuple[list[str], list[str]]]


def _detector_labels(detector: DetectorAnswers) -> Labels:
    return {
        item: {
            "person": "yes" if answer.human else "no",
            "gender": answer.gender,
            "ethnicity": answer.ethnicity,
        }
        for item, answer in detector.items.items()
    }


def _pairs(first: Labels, second: Labels) -> Pairs:
    shared = sorted(set(first) & set(second))
    both = [i for i in shared if first[i]["person"] == "yes" and second[i]["person"] == "yes"]
    return {
        "person": ([first[i]["person"] for i in shared], [second[i]["person"] for i in shared]),
        "gender": ([first[i]["gender"] for i in both], [second[i]["gender"] for i in both]),
        "ethnicity": ([first[i]["ethnicity"] for i in both], [second[i]["ethnicity"] for i in both]),
    }


QUESTIONS = {"person": PERSON.values, "gender": ("woman", "man", CANT_TELL), "ethnicity": ETHNICITY.values}


def _kappas(pairs: Pairs) -> dict[str, Any]:
    return {
        field: agreement.kappa(*pairs[field], categories).as_document()
        for field, categories in QUESTIONS.items()
    }


def _confusion(pairs: Pairs) -> dict[str, Any]:
    return {
        field: {
            "rows": "detector",
            "columns": "people",
            "categories": list(categories),
            "counts": agreement.confusion(*pairs[field], categories).tolist(),
        }
        for field, categories in QUESTIONS.items()
    }


def _between(by_annotator: dict[str, Labels]) -> dict[str, Any]:
    names = sorted(by_annotator)
    result: dict[str, Any] = {
        "pairs": [
            {"annotators": [a, b], **_kappas(_pairs(by_annotator[a], by_annotator[b]))}
            for a, b in combinations(names, 2)
        ]
    }
    if len(names) > 2:
        items = sorted({item for labels in by_annotator.values() for item in labels})
        alphas = {}
        for field, categories in QUESTIONS.items():
            ratings: list[list[str | None]] = []
            for name in names:
                labels = by_annotator[name]
                row: list[str | None] = []
                for item in items:
                    label = labels.get(item)
                    counted = label is not None and (field == "person" or label["person"] == "yes")
                    row.append(label[field] if label is not None and counted else None)
                ratings.append(row)
            alphas[field] = agreement.alpha(ratings, categories).as_document()
        result["alpha"] = alphas
    return result


def _weights(detector: DetectorAnswers, people: Labels) -> dict[str, float]:
    """Each labelled item's weight: its stratum's size over the labelled items of that stratum."""
    labelled = Counter(
        (answer.candidate_id, answer.stratum) for item, answer in detector.items.items() if item in people
    )
    sizes = {(p.candidate_id, stratum): size for p in detector.points for stratum, size in p.strata.items()}
    return {
        item: sizes[(answer.candidate_id, answer.stratum)] / labelled[(answer.candidate_id, answer.stratum)]
        for item, answer in detector.items.items()
        if item in people
    }


def _gate(detector: DetectorAnswers, people: Labels) -> dict[str, Any]:
    weights = _weights(detector, people)
    true_positive = detected = actual = 0.0
    counts: Counter[str] = Counter()
    for item, weight in weights.items():
        said, seen = detector.items[item].human, people[item]["person"]
        counts[f"detector {'yes' if said else 'no'}, people {seen}"] += 1
        if seen == UNCLEAR:
            continue
        detected += weight if said else 0.0
        actual += weight if seen == "yes" else 0.0
        true_positive += weight if said and seen == "yes" else 0.0
    return {
        "enabled": detector.person_gate,
        "precision": true_positive / detected if detected else None,
        "recall": true_positive / actual if actual else None,
        "images": len(weights),
        "counts": dict(sorted(counts.items())),
        "note": (
            "rates over all the points' images (each audited image weighted by its stratum's size); "
            "images people marked unclear are left out"
            if detector.person_gate
            else "the person gate (scoring.humanFilter) was off: every image counted as a person"
        ),
    }


def _points(detector: DetectorAnswers, people: Labels, seed: int, draws: int) -> list[dict[str, Any]]:
    points = []
    for point in detector.points:
        mine = {i: a for i, a in detector.items.items() if a.candidate_id == point.candidate_id}
        human = {s: n for s, n in point.strata.items() if s != NO_PERSON}
        raw_gender = [sum(n for s, n in human.items() if s.split("/")[1] == g) for g in ("woman", "man")]
        raw_ethnic = [sum(n for s, n in human.items() if s.split("/")[2] == g) for g in ETHNIC_GROUPS]
        entry: dict[str, Any] = {
            "candidateId": point.candidate_id,
            "role": point.role,
            "images": sum(point.strata.values()),
            "audited": len(mine),
            "labelled": sum(1 for i in mine if i in people),
        }
        for name, field, bias, classes, of, raw in (
            ("genderBias", "gender", GENDER, GENDER_CLASSES, gender_class, raw_gender),
            ("ethnicBias", "ethnicity", ETHNIC, ETHNIC_CLASSES, ethnic_class, raw_ethnic),
        ):
            strata = [
                correction.Stratum(
                    size,
                    tuple(
                        of(people[i]["person"], people[i].get(field))
                        for i, a in sorted(mine.items())
                        if a.stratum == stratum and i in people
                    ),
                )
                for stratum, size in sorted(point.strata.items())
            ]
            key = f"audit:{seed}:{point.candidate_id}:{name}"
            result = correction.correct(
                name, bias, strata, classes, raw, point.candidate_id, generator(key), draws
            )
            entry[name] = result.as_document()
        points.append(entry)
    return points


def score(directory: Path, draws: int = correction.DRAWS) -> dict[str, Any]:
    manifest = verify(directory)
    detector = load_detector(directory, manifest)
    names = annotators(directory)
    if not names:
        raise ScoreError(
            f"no labels in {directory / 'labels'}: label the set first (sustaindiffusion audit serve "
            f"{directory} --annotator ID)"
        )
    by_annotator = {name: complete_labels(directory, name, manifest) for name in names}
    if not any(by_annotator.values()):
        raise ScoreError("no image is labelled completely yet: nothing to score")
    people = consensus(by_annotator)
    machine = _detector_labels(detector)
    document: dict[str, Any] = {
        "format": FORMAT,
        "scoredAt": time.time(),
        "run": manifest.run.model_dump(mode="json"),
        "manifestSha256": (directory / "manifest.sha256").read_text().strip(),
        "items": len(manifest.items),
        "annotators": {name: len(labels) for name, labels in by_annotator.items()},
        "labelled": len(people),
        "rules": {
            "minimumAgreementImages": agreement.MIN_ITEMS,
            "minimumEvidence": correction.MIN_EVIDENCE,
            "maximumIntervalWidth": correction.MAX_WIDTH,
            "level": correction.LEVEL,
            "draws": draws,
            "peopleAnswer": "majority of the annotators per question (a tie: unclear / can't tell)",
        },
        "detectorVsPeople": {
            name: _kappas(_pairs(machine, labels))
            for name, labels in {**by_annotator, CONSENSUS: people}.items()
        },
        "confusion": _confusion(_pairs(machine, people)),
        "betweenAnnotators": _between(by_annotator),
        "personGate": _gate(detector, people),
        "points": _points(detector, people, manifest.seed, draws),
    }
    return document


def write(directory: Path, document: dict[str, Any]) -> Path:
    path = directory / SCORE_FILE
    write_atomically(path, json.dumps(document, indent=1).encode())
    return path
