"""Exporting an audit set from a run's saved images, and scoring hand-written labels: which images
are sampled, what is kept apart, refusals, and the score's figures against hand-computed ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sustaindiffusion.api.spec import Artifacts
from sustaindiffusion.audit import score as score_module
from sustaindiffusion.audit.auditset import AuditSetError, load_detector, verify
from sustaindiffusion.audit.findings import FindingsError, find
from sustaindiffusion.audit.labels import LabelStore
from sustaindiffusion.audit.sample import draw
from sustaindiffusion.audit.source import NO_PERSON, Point, SourceError, images_of
from tests.support.audit_sets import export, make_run, spec, write_candidate, write_task

# The defaults: 200 images the detector called women (asian), 80 men (white), 20 not a person.
DEFAULTS = (
    [(True, "female", "asian")] * 200 + [(True, "male", "white")] * 80 + [(False, "female", "black")] * 20
)
FRONT = [(True, "female", "white")] * 12 + [(True, "male", "black")] * 12


def test_strata_follow_the_detector_and_validation_images_are_left_out(tmp_path: Path) -> None:
    run = tmp_path / "run"
    points = make_run(run, {"d": DEFAULTS, "f": FRONT})
    write_candidate(run, 1, "f", [(True, "female", "arab")] * 3, first_image=24)  # more evidence
    write_candidate(run, 2, "f", [(True, "male", "arab")] * 5)  # held-out validation
    write_task(run, 1, ["f"])
    write_task(run, 2, ["d", "f"], seed_stream="validation")
    found = {p.point.candidate_id: p for p in images_of(run, spec(), points)}
    assert len(found["d"].images) == 300
    assert len(found["f"].images) == 27  # 24 + 3 of generation 1; none of validation's
    assert {image.generation for image in found["f"].images} == {0, 1}
    sample = draw(list(found.values()), per_stratum=5, seed=3)
    assert sample.strata["d"] == {NO_PERSON: 20, "person/man/white": 80, "person/woman/asian": 200}
    assert sample.strata["f"] == {"person/man/black": 12, "person/woman/arab": 3, "person/woman/white": 12}
    drawn = [item.image.stratum for item in sample.items if item.image.candidate_id == "d"]
    assert sorted(drawn) == sorted([NO_PERSON] * 5 + ["person/man/white"] * 5 + ["person/woman/asian"] * 5)


def test_the_sample_is_deterministic_given_the_seed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    found = images_of(run, spec(), make_run(run, {"d": DEFAULTS, "f": FRONT}))

    def drawn(seed: int) -> list[tuple[str, str, int]]:
        return [(i.item_id, i.image.candidate_id, i.image.image_index) for i in draw(found, 5, seed).items]

    assert drawn(1) == drawn(1)
    assert drawn(1) != drawn(2)


def test_images_not_saved_are_refused_with_how_to_save_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    points = make_run(run, {"d": DEFAULTS})
    unsaved = spec()
    unsaved = unsaved.model_copy(
        update={
            "execution": unsaved.execution.model_copy(
                update={"artifacts": Artifacts(claim_name="art", save_images=False)}
            )
        }
    )
    with pytest.raises(SourceError, match=r"saveImages: false.*set saveImages: true"):
        images_of(run, unsaved, points)
    next((run / "artifacts" / "generation-0000" / "d").glob("*.png")).unlink()
    with pytest.raises(SourceError, match=r"1 of the 300 images of defaults point d were not saved"):
        images_of(run, spec(), points)
    with pytest.raises(SourceError, match="no image records for front point x"):
        images_of(run, spec(), [Point("x", "front")])


def test_an_audit_set_keeps_the_detector_apart_and_is_never_overwritten(tmp_path: Path) -> None:
    run = tmp_path / "run"
    points = make_run(run, {"d": DEFAULTS, "f": FRONT})
    manifest = export(run, points, tmp_path / "audit", per_stratum=5)
    text = (tmp_path / "audit" / "manifest.json").read_text()
    for word in ("female", "asian", '"stratum"', "human", '"d"'):
        assert word not in text
    assert [p.name for p in sorted((tmp_path / "audit" / "images").iterdir())] == sorted(
        f"{item.id}.png" for item in manifest.items
    )
    detector = load_detector(tmp_path / "audit", verify(tmp_path / "audit"))
    assert {a.stratum for a in detector.items.values()} >= {NO_PERSON, "person/woman/asian"}
    with pytest.raises(AuditSetError, match="already exists and is not empty"):
        export(run, points, tmp_path / "audit")
    answers = tmp_path / "audit" / "detector" / "answers.json"
    answers.write_text(answers.read_text().replace("asian", "white"))
    with pytest.raises(AuditSetError, match=r"answers\.json was changed after export"):
        load_detector(tmp_path / "audit", verify(tmp_path / "audit"))


def _label(directory: Path, annotator: str, answer: dict[str, tuple[str, ...]]) -> None:
    """Label every item: `answer[stratum]` is what this annotator says of each image of that
    detector stratum (person, then gender and ethnicity unless no person)."""
    manifest = verify(directory)
    detector = load_detector(directory, manifest)
    store = LabelStore(directory, annotator, manifest, (directory / "manifest.sha256").read_text().strip())
    for item in manifest.items:
        values = answer[detector.items[item.id].stratum]
        for field, value in zip(("person", "gender", "ethnicity"), values, strict=False):
            store.answer(item.id, field, value)


def test_scoring_hand_written_labels(tmp_path: Path) -> None:
    """Defaults: 50 of each 200 and 80 images the detector called a woman or a man, and all 20 it
    turned away. People (two annotators) see a woman in each image the detector called a woman, a
    man in each it called a man, and in the 20 it turned away a person too: a man. Corrected: 200
    women and 100 men of 300 -> gender bias |2 * 200/300 - 1| = 1/3, against the detector's 200 of
    280 -> |2 * 200/280 - 1| = 0.4286."""
    run = tmp_path / "run"
    audit = tmp_path / "audit"
    export(run, make_run(run, {"d": DEFAULTS, "f": FRONT}), audit, per_stratum=50)
    answers = {
        NO_PERSON: ("yes", "man", "black"),
        "person/woman/asian": ("yes", "woman", "asian"),
        "person/man/white": ("yes", "man", "white"),
        "person/woman/white": ("yes", "woman", "white"),
        "person/man/black": ("yes", "man", "black"),
    }
    _label(audit, "alice", answers)
    _label(audit, "bob", answers | {"person/man/black": ("no",)})  # bob sees no person in those 12
    document = score_module.score(audit, draws=500)
    defaults = next(p for p in document["points"] if p["candidateId"] == "d")
    assert defaults["images"] == 300
    assert defaults["audited"] == defaults["labelled"] == 120
    gender = defaults["genderBias"]
    assert gender["raw"] == pytest.approx(abs(2 * 200 / 280 - 1))
    assert gender["corrected"] == pytest.approx(1 / 3)
    assert gender["conclusive"]
    assert gender["interval"][0] <= gender["corrected"] <= gender["interval"][1]
    # The person gate, each audited image weighted by its stratum's size over its audited images:
    # every image it passed is a person (precision 1); of the people (200 + 80 + 20 of the
    # defaults, 12 women of the front), it passed all but the defaults' 20 (recall 292/312). Bob's
    # "no" on the front's 12 men ties with alice's "yes": unclear, left out of both.
    gate = document["personGate"]
    assert gate["precision"] == pytest.approx(1.0)
    assert gate["recall"] == pytest.approx(292 / 312)
    # Between the annotators: alice says yes to all 144 images, bob to 132: observed agreement
    # 132/144 equals chance agreement (1 * 132/144), so kappa is 0.
    pair = document["betweenAnnotators"]["pairs"][0]
    assert pair["annotators"] == ["alice", "bob"]
    assert pair["person"]["items"] == 144
    assert pair["person"]["value"] == pytest.approx(0.0)
    assert "alpha" not in document["betweenAnnotators"]  # two annotators: kappa only
    # Detector vs alice on gender over the images both call a person: perfect agreement.
    assert document["detectorVsPeople"]["alice"]["gender"]["value"] == pytest.approx(1.0)
    confusion = document["confusion"]["person"]
    assert confusion["categories"] == ["yes", "no", "unclear"]
    assert confusion["counts"][1][0] == 20  # the detector's 20 "no" that people call a person
    path = score_module.write(audit, document)
    assert json.loads(path.read_text())["points"] == document["points"]


def test_three_annotators_get_krippendorffs_alpha(tmp_path: Path) -> None:
    run = tmp_path / "run"
    audit = tmp_path / "audit"
    export(run, make_run(run, {"f": FRONT}), audit, per_stratum=50)
    same = {"person/woman/white": ("yes", "woman", "white"), "person/man/black": ("yes", "man", "black")}
    for name in ("a", "b", "c"):
        _label(audit, name, same)
    document = score_module.score(audit, draws=200)
    alpha = document["betweenAnnotators"]["alpha"]
    assert alpha["gender"]["value"] == pytest.approx(1.0)
    assert alpha["gender"]["items"] == 24
    assert len(document["betweenAnnotators"]["pairs"]) == 3


def test_scoring_without_labels_says_how_to_label(tmp_path: Path) -> None:
    run = tmp_path / "run"
    export(run, make_run(run, {"f": FRONT}), tmp_path / "audit")
    with pytest.raises(score_module.ScoreError, match="audit serve"):
        score_module.score(tmp_path / "audit")


def test_the_report_finds_the_score_of_its_own_run_only(tmp_path: Path) -> None:
    run = tmp_path / "run"
    audit = run / "audit"  # the conventional place
    export(run, make_run(run, {"f": FRONT}), audit, per_stratum=50)
    assert find(run, None) is None  # not scored yet: nothing to show
    _label(
        audit,
        "a",
        {"person/woman/white": ("yes", "woman", "white"), "person/man/black": ("yes", "man", "black")},
    )
    score_module.write(audit, score_module.score(audit, draws=200))
    findings = find(run, None)
    assert findings is not None
    html = findings.html()
    assert "Bias figures checked by people" in html
    assert "<code>f</code>" in html
    profile = findings.for_profile("f")
    assert profile is not None
    assert profile["genderBias"]["corrected"] == pytest.approx(0.0)
    assert findings.for_profile("elsewhere") is None
    other = tmp_path / "other"
    make_run(other, {"f": FRONT})
    (other / "spec.json").write_text(json.dumps({"name": "another"}))
    with pytest.raises(FindingsError, match="audits another search"):
        find(other, audit)
    with pytest.raises(FindingsError, match=r"has no score\.json"):
        find(run, tmp_path)
    # A cluster search's report (no run directory here) checks the search's name.
    assert find(None, audit, search="hand-made") is not None
    with pytest.raises(FindingsError, match="audits the search 'hand-made', not 'other'"):
        find(None, audit, search="other")
