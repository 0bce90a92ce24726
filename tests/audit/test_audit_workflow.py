"""The audit from a finished tiny search to a report: export, the labelling page in a real browser
(Debian's headless Chromium through Selenium and its chromedriver), a server killed and started
again mid-way, a second annotator, the score, the report and the profile.

The annotator's answers are scripted from the detector's (the test may read them; the page never
does), so the kappas the score must find follow from the script and are computed here by hand. The
server is killed once the label file itself shows the chosen number of answers, never after a
guessed delay. A screenshot of the page is kept at out/audit/labelling-page.png (out/ is ignored
by git; docs/audit-page.png is a copy of one).
"""

from __future__ import annotations

import json
import shutil
import signal
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from sustaindiffusion.audit.auditset import DetectorItem, load_detector, verify
from sustaindiffusion.audit.labels import LabelStore
from sustaindiffusion.audit.scheme import BY_FIELD, CANT_TELL
from tests.support.local_runs import CLI, QUICKSTART, sustaindiffusion
from tests.support.processes import ManagedProcess, http_ok, wait_while_running
from tests.support.slots import free_port
from tests.support.tiny import ensure_tiny_models

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "out" / "audit" / "labelling-page.png"
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
PAGE_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny search that saved its images: population 4, one generation, 2 images per prompt."""
    directory = tmp_path_factory.mktemp("audited")
    (directory / "tiny-models").symlink_to(ensure_tiny_models())
    manifest = yaml.safe_load(QUICKSTART.read_text())
    manifest["spec"]["algorithm"] |= {"populationSize": 4, "generations": 1}
    manifest["spec"]["prompts"]["imagesPerPrompt"] = 2
    manifest["spec"].pop("validation")
    manifest["spec"]["execution"]["candidatesPerPod"] = 4
    spec = directory / "search.yaml"
    spec.write_text(yaml.safe_dump(manifest))
    sustaindiffusion("run", str(spec), "--out", str(directory / "out"))
    return directory / "out"


def test_export_refuses_what_it_cannot_do_and_never_overwrites(run_dir: Path, tmp_path: Path) -> None:
    both = sustaindiffusion("audit", "export", str(run_dir), "--search", "quickstart", check=False)
    assert both.returncode == 2
    assert "not both" in both.stderr
    first = sustaindiffusion("audit", "export", str(run_dir), "--out", str(tmp_path / "a"), "--seed", "4")
    assert "next: sustaindiffusion audit serve" in first.stderr
    sustaindiffusion("audit", "export", str(run_dir), "--out", str(tmp_path / "b"), "--seed", "4")
    same = [[item.sha256 for item in verify(tmp_path / name).items] for name in ("a", "b")]
    assert same[0] == same[1]  # the same seed, the same sample in the same order
    again = sustaindiffusion("audit", "export", str(run_dir), "--out", str(tmp_path / "a"), check=False)
    assert again.returncode == 2
    assert "already exists and is not empty" in again.stderr


def scripted(number: int, detector: DetectorItem) -> list[str]:
    """Alice's answers for the `number`-th image (from 0), as a function of the detector's: no
    person in every fifth; the detector's gender except in every third (flipped); the detector's
    ethnicity except in every fourth (can't tell)."""
    if number % 5 == 4:
        return ["no"]
    flipped = {"woman": "man", "man": "woman", CANT_TELL: "woman"}
    gender = flipped[detector.gender] if number % 3 == 0 else detector.gender
    ethnicity = CANT_TELL if number % 4 == 0 else detector.ethnicity
    return ["yes", gender, ethnicity]


def bob(number: int, detector: DetectorItem) -> list[str]:
    """Bob agrees with alice but sees a person in every fifth, a man."""
    answers = scripted(number, detector)
    return ["yes", "man", CANT_TELL] if answers == ["no"] else answers


def kappa_by_hand(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa from its definition: (observed - chance) / (1 - chance)."""
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    left, right = Counter(first), Counter(second)
    chance = sum(left[c] * right[c] for c in left) / n**2
    return None if chance == 1 else (observed - chance) / (1 - chance)


class Browser:
    def __init__(self, url: str) -> None:
        for path in (CHROMIUM, CHROMEDRIVER):
            if not path.exists():
                pytest.fail(
                    f"{path} is missing: run `bash hack/ensure-system-deps.sh` "
                    "(Debian's chromium and chromium-driver)"
                )
        options = Options()
        options.binary_location = str(CHROMIUM)
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1100,720",
        ):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        self.url = url
        try:
            self.driver.get(url)
            self.wait_idle()
        except BaseException:
            self.driver.quit()  # the caller never gets this browser to close
            raise

    def wait_idle(self, answers: int | None = None) -> None:
        """Until the page has its state from the server (and, if given, shows `answers` answers)."""

        def ready(driver: webdriver.Chrome) -> bool:
            body = driver.find_element(By.TAG_NAME, "body")
            if body.get_attribute("data-ready") != "1":
                return False
            return answers is None or body.get_attribute("data-answers") == str(answers)

        WebDriverWait(self.driver, PAGE_TIMEOUT_S, poll_frequency=0.05).until(ready)

    def press(self, key: str, answers: int) -> None:
        self.driver.find_element(By.TAG_NAME, "body").send_keys(key)
        self.wait_idle(answers)

    def where(self) -> tuple[str | None, str | None]:
        image = self.driver.find_element(By.ID, "image").get_attribute("data-item")
        question = self.driver.find_element(By.ID, "question").get_attribute("data-field")
        return image, question

    def close(self) -> None:
        self.driver.quit()


def key_of(field: str, value: str) -> str:
    return next(option.key for option in BY_FIELD[field].options if option.value == value)


def serve(audit: Path, port: int, log: Path) -> ManagedProcess:
    process = ManagedProcess(
        "audit-serve",
        [*CLI, "audit", "serve", str(audit), "--annotator", "alice", "--port", str(port)],
        log,
    )
    wait_while_running(
        process,
        lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
        START_TIMEOUT_S,
        what="the labelling page",
    )
    return process


@pytest.fixture
def browser_session(tmp_path: Path) -> Iterator[list[object]]:
    """What the test started, stopped whatever happens."""
    started: list[object] = []
    yield started
    for thing in reversed(started):
        if isinstance(thing, Browser):
            thing.close()
        elif isinstance(thing, ManagedProcess):
            thing.stop()


def test_label_in_a_browser_restart_midway_score_and_report(
    run_dir: Path, tmp_path: Path, browser_session: list[object]
) -> None:
    audit = run_dir / "audit"  # the default place: the report finds it there
    sustaindiffusion("audit", "export", str(run_dir), "--per-stratum", "3", "--seed", "1")
    manifest = verify(audit)
    detector = load_detector(audit, manifest)
    plan = [
        (item.id, field, value)
        for number, item in enumerate(manifest.items)
        for field, value in zip(
            ("person", "gender", "ethnicity"), scripted(number, detector.items[item.id]), strict=False
        )
    ]
    assert len(manifest.items) >= 6
    kill_after = len(plan) // 2
    port = free_port()
    server = serve(audit, port, tmp_path / "serve-1.log")
    browser_session.append(server)
    assert f"http://127.0.0.1:{port}/" in server.log_tail()  # localhost by default
    browser = Browser(f"http://127.0.0.1:{port}/")
    browser_session.append(browser)
    labels = audit / "labels" / "alice.json"

    def answers_on_disk() -> int:
        return len(json.loads(labels.read_text())["answers"]) if labels.exists() else 0

    for given, (item, field, value) in enumerate(plan):
        assert browser.where() == (item, field)
        if given == 1:  # a slip, taken back with the undo key
            wrong = next(o.value for o in BY_FIELD[field].options if o.value != value)
            browser.press(key_of(field, wrong), given + 1)
            browser.press("z", given)
            assert answers_on_disk() == given
        browser.press(key_of(field, value), given + 1)
        if given + 1 == kill_after:
            # Triggered by what the server reports: press() returned once the page showed the
            # answer count the server sent after saving, and the label file holds every answer
            # given. Kill the server outright (no clean stop) and start it again on the same port;
            # the page resumes at the same question.
            assert answers_on_disk() == kill_after
            server.signal_group(signal.SIGKILL)
            server.stop()
            server = serve(audit, port, tmp_path / "serve-2.log")
            browser_session.append(server)
            browser.driver.refresh()
            browser.wait_idle(kill_after)
            assert browser.where() == plan[kill_after][:2]
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            browser.driver.save_screenshot(str(SCREENSHOT))
    assert answers_on_disk() == len(plan)
    assert browser.driver.find_element(By.ID, "done").is_displayed()
    assert SCREENSHOT.stat().st_size > 10_000
    shutil.copyfile(SCREENSHOT, tmp_path / "labelling-page.png")  # beside the test's other files too

    # A second annotator labels the same set into a file of their own.
    digest = (audit / "manifest.sha256").read_text().strip()
    second = LabelStore(audit, "bob", manifest, digest)
    for number, listed in enumerate(manifest.items):
        for field, value in zip(
            ("person", "gender", "ethnicity"), bob(number, detector.items[listed.id]), strict=False
        ):
            second.answer(listed.id, field, value)

    scored = sustaindiffusion("audit", "score", str(audit), "--draws", "500")
    assert "agreement: Cohen's kappa" in scored.stderr + scored.stdout
    document = json.loads((audit / "score.json").read_text())
    alice = {item.id: scripted(n, detector.items[item.id]) for n, item in enumerate(manifest.items)}
    bobs = {item.id: bob(n, detector.items[item.id]) for n, item in enumerate(manifest.items)}
    ids = [item.id for item in manifest.items]
    # Detector against alice, gender: over the images alice calls a person and the gate passed.
    both = [i for i in ids if alice[i][0] == "yes" and detector.items[i].human]
    expected = kappa_by_hand([detector.items[i].gender for i in both], [alice[i][1] for i in both])
    found = document["detectorVsPeople"]["alice"]["gender"]
    assert found["items"] == len(both)
    assert found["value"] == (pytest.approx(expected) if expected is not None else None)
    # Alice against bob, person: over every image.
    expected = kappa_by_hand([alice[i][0] for i in ids], [bobs[i][0] for i in ids])
    pair = document["betweenAnnotators"]["pairs"][0]
    assert pair["annotators"] == ["alice", "bob"]
    assert pair["person"]["value"] == (pytest.approx(expected) if expected is not None else None)
    points = {p["candidateId"] for p in document["points"]}
    assert {detector.items[i].candidate_id for i in ids} == points

    report = sustaindiffusion("report", str(run_dir))
    assert f"with the audit in {audit / 'score.json'}" in report.stderr.replace("\n", "")
    page = (run_dir / "report" / "index.html").read_text()
    assert "Bias figures checked by people (audit)" in page
    assert all(f"<code>{candidate}</code>" in page for candidate in points)
    profile_run = sustaindiffusion("export-profile", str(run_dir), "--rule", "knee")
    written = next(run_dir.glob("profile-*.json"))
    profile = json.loads(written.read_text())
    assert profile["audit"]["genderBias"]["raw"] == pytest.approx(profile["measured"]["genderBias"], abs=1e-6)
    assert "corrected by people" in profile_run.stderr.replace("\n", "")
