"""The labelling page's API (Starlette's TestClient) and its label files: answers in turn, undo,
resume, two annotators, bad input refused with a clear message and nothing changed, a changed set
refused, and the detector's answers never sent."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from sustaindiffusion.audit.auditset import AuditSetError, load_detector, verify
from sustaindiffusion.audit.labels import LabelError, LabelStore
from sustaindiffusion.audit.page import create_app
from tests.support.audit_sets import export, make_run

POINTS = {
    "defaults0000000": [(True, "female", "asian"), (True, "male", "white"), (False, "female", "black")] * 2,
    "front0000000001": [(True, "woman", "arab"), (True, "man", "martian"), (True, "person", "white")],
}


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    export(run, make_run(run, POINTS), tmp_path / "audit")
    return tmp_path / "audit"


def client(directory: Path, annotator: str = "ann") -> TestClient:
    return TestClient(create_app(directory, annotator))


def label_file(directory: Path, annotator: str = "ann") -> dict[str, Any]:
    document: dict[str, Any] = json.loads((directory / "labels" / f"{annotator}.json").read_text())
    return document


def answer(page: TestClient, value: str) -> dict[str, object]:
    state = page.get("/api/state").json()
    response = page.post(
        "/api/answer", json={"item": state["item"], "field": state["question"]["field"], "value": value}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_page_asks_one_question_at_a_time_and_saves_each_answer(audit_dir: Path) -> None:
    page = client(audit_dir)
    html = page.get("/")
    assert html.status_code == 200
    assert 'annotator <b id="annotator">ann</b>' in html.text
    state = page.get("/api/state").json()
    manifest = verify(audit_dir)
    assert state["total"] == len(manifest.items) == 9  # every image: no stratum has more than 10
    assert state["item"] == manifest.items[0].id
    assert state["question"]["field"] == "person"
    assert [o["key"] for o in state["question"]["options"]] == ["y", "n", "u"]
    state = answer(page, "yes")
    assert state["question"]["field"] == "gender"
    assert state["answered"] == {"person": "yes"}
    assert label_file(audit_dir)["answers"][0]["value"] == "yes"  # on disk before the response
    state = answer(page, "woman")
    assert [o["value"] for o in state["question"]["options"]] == [
        "white",
        "asian",
        "black",
        "arab",
        "cant_tell",
    ]
    state = answer(page, "asian")
    assert state["complete"] == 1
    assert state["item"] == manifest.items[1].id
    state = answer(page, "no")  # no person: the image is complete at once
    assert state["complete"] == 2
    assert state["question"]["field"] == "person"
    assert state["item"] == manifest.items[2].id


def test_undo_takes_back_the_last_answer_and_a_restart_resumes(audit_dir: Path) -> None:
    page = client(audit_dir)
    answer(page, "yes")
    answer(page, "man")
    state = page.post("/api/undo", json={}).json()
    assert state["question"]["field"] == "gender"
    assert state["answered"] == {"person": "yes"}
    assert len(label_file(audit_dir)["answers"]) == 1
    answer(page, "cant_tell")
    resumed = client(audit_dir).get("/api/state").json()  # a new server over the same files
    assert resumed["question"]["field"] == "ethnicity"
    assert resumed["answered"] == {"person": "yes", "gender": "cant_tell"}
    assert resumed["answers"] == 2


def test_two_annotators_label_into_their_own_files(audit_dir: Path) -> None:
    first, second = client(audit_dir, "alice"), client(audit_dir, "bob")
    answer(first, "no")
    assert second.get("/api/state").json()["complete"] == 0
    answer(second, "yes")
    assert [a["value"] for a in label_file(audit_dir, "alice")["answers"]] == ["no"]
    assert [a["value"] for a in label_file(audit_dir, "bob")["answers"]] == ["yes"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"item": "img-9999", "field": "person", "value": "yes"}, 404, "unknown image id 'img-9999'"),
        (
            {"item": "CURRENT", "field": "person", "value": "maybe"},
            422,
            "'maybe' is not an answer to 'person'",
        ),
        ({"item": "CURRENT", "field": "mood", "value": "yes"}, 422, "unknown question 'mood'"),
        ({"item": "CURRENT", "field": "gender", "value": "woman"}, 409, "is at the question 'person'"),
        ({"item": "SECOND", "field": "person", "value": "yes"}, 409, "is not the one being labelled"),
        ({"item": "CURRENT", "field": "person"}, 422, "expected"),
        ({"item": "CURRENT", "field": "person", "value": 1}, 422, "all strings"),
    ],
)
def test_bad_answers_are_refused_and_change_nothing(
    audit_dir: Path, body: dict[str, object], status: int, words: str
) -> None:
    page = client(audit_dir)
    manifest = verify(audit_dir)
    replace = {"CURRENT": manifest.items[0].id, "SECOND": manifest.items[1].id}
    body = {k: replace.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    response = page.post("/api/answer", json=body)
    assert response.status_code == status
    assert words in response.json()["error"]
    assert not (audit_dir / "labels" / "ann.json").exists()
    assert page.get("/api/state").json()["answers"] == 0


def test_bodies_that_are_not_json_objects_are_refused(audit_dir: Path) -> None:
    page = client(audit_dir)
    form = page.post("/api/answer", data={"item": "x"})  # a form, as another site could send
    assert form.status_code == 415
    assert "application/json" in form.json()["error"]
    broken = page.post("/api/answer", content=b"{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400
    assert "not JSON" in broken.json()["error"]
    listed = page.post("/api/answer", json=["yes"])
    assert listed.status_code == 400
    nothing = page.post("/api/undo", json={})
    assert nothing.status_code == 409
    assert "nothing to undo" in nothing.json()["error"]
    assert not (audit_dir / "labels" / "ann.json").exists()


def test_images_are_served_only_while_they_match_the_manifest(audit_dir: Path) -> None:
    page = client(audit_dir)
    item = verify(audit_dir).items[0]
    image = page.get(f"/images/{item.id}")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content == (audit_dir / item.image).read_bytes()
    assert page.get("/images/img-9999").status_code == 404
    (audit_dir / item.image).write_bytes(b"not the image")
    changed = page.get(f"/images/{item.id}")
    assert changed.status_code == 409
    assert "changed or removed after export" in changed.json()["error"]


def test_a_changed_image_or_manifest_stops_the_page_from_starting(audit_dir: Path) -> None:
    item = verify(audit_dir).items[2]
    original = (audit_dir / item.image).read_bytes()
    (audit_dir / item.image).write_bytes(original + b"\0")
    with pytest.raises(AuditSetError, match=r"img-\d+\.png was changed after export"):
        create_app(audit_dir, "ann")
    (audit_dir / item.image).write_bytes(original)
    manifest = audit_dir / "manifest.json"
    manifest.write_text(manifest.read_text().replace(item.sha256, "0" * 64))
    with pytest.raises(AuditSetError, match=r"manifest\.json was changed after export"):
        create_app(audit_dir, "ann")
    (audit_dir / "manifest.sha256").unlink()
    with pytest.raises(AuditSetError, match=r"manifest\.sha256 is missing"):
        create_app(audit_dir, "ann")


def test_a_bad_annotator_id_or_label_file_is_refused(audit_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"annotator id '\.\./x'"):
        create_app(audit_dir, "../x")
    (audit_dir / "labels" / "ann.json").write_text(json.dumps({"format": 1}))
    with pytest.raises(LabelError, match="is not a label file"):
        create_app(audit_dir, "ann")


def test_the_detector_answers_never_reach_the_page(audit_dir: Path) -> None:
    """The page works without the detector's file (it never reads it), and nothing it sends names
    a detector answer or the image's stratum."""
    detector = load_detector(audit_dir, verify(audit_dir))
    (audit_dir / "detector" / "answers.json").unlink()
    page = client(audit_dir)
    sent = [page.get("/").text]
    for value in ("yes", "woman", "white", "no", "yes", "man", "arab"):
        state = page.get("/api/state").json()
        sent.append(json.dumps(state))
        assert set(state) == {
            *("annotator", "total", "complete", "answers", "canUndo", "done"),
            *("item", "image", "question", "answered"),
        }
        answer(page, value)
    text = "\n".join(sent)
    for forbidden in ("stratum", "gender_answer", "ethnicity_answer", "human", "candidate", "person/"):
        assert forbidden not in text
    assert detector.items  # there were answers to leak


def test_a_failed_save_keeps_the_old_labels(audit_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The labels change only once the new file has replaced the old one: a failure while saving
    (as a kill between write and rename) leaves the previous file and the previous state."""
    manifest = verify(audit_dir)
    digest = (audit_dir / "manifest.sha256").read_text().strip()
    store = LabelStore(audit_dir, "ann", manifest, digest)
    store.answer(manifest.items[0].id, "person", "yes")
    before = (audit_dir / "labels" / "ann.json").read_bytes()
    replace = os.replace

    def fail(source: object, target: object) -> None:
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="killed before the rename"):
        store.answer(manifest.items[0].id, "gender", "woman")
    assert (audit_dir / "labels" / "ann.json").read_bytes() == before
    assert store.current() == (manifest.items[0].id, "gender")
    monkeypatch.setattr(os, "replace", replace)
    store.answer(manifest.items[0].id, "gender", "woman")
    assert LabelStore(audit_dir, "ann", manifest, digest).labels() == {
        manifest.items[0].id: {"person": "yes", "gender": "woman"}
    }
