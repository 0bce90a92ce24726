"""`sustaindiffusion run` as a child process, interrupted at a point the run itself reports.

A run reports where it is in its output directory: each result is a line of `archive.jsonl` (with
its `stage`), each launched task a file under `tasks/`, and each worker writes its log under
`reports/` ("loading the model ...", "candidate ...: evaluating"). An interruption is sent once one
of those appears, never after a guessed delay, so a slow machine changes only how long the wait
takes, not what is tested.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import yaml

from tests.support.processes import wait_until
from tests.support.tiny import ensure_tiny_models

CLI = [sys.executable, "-m", "sustaindiffusion.local.cli"]
QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"
REACH_TIMEOUT_S = 600.0  # generous: the reported point comes after model loads on a busy 2-core machine
# After the signal, the run stops its workers (SIGTERM, SIGKILL after 10 s) and exits; a run still
# going after this long ignored the signal.
EXIT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Interrupted:
    returncode: int
    stdout: str
    stderr: str
    seconds_to_exit: float  # from the signal to the process's exit (a figure to print, not to assert)
    workers_left: list[str]  # command lines of worker processes still running for this output


def archived(out: Path) -> list[dict[str, object]]:
    """The archive's records so far, read-only (a last line being written is left out)."""
    archive = out / "archive.jsonl"
    if not archive.exists():
        return []
    records = []
    for line in archive.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line being written
    return records


def archived_stages(out: Path) -> list[str | None]:
    """The stage of every archived result so far, in order (None: a whole evaluation)."""
    return [cast(str | None, record.get("stage")) for record in archived(out)]


def generation_archived(out: Path, generation: int) -> bool:
    return any(record.get("generation") == generation for record in archived(out))


def worker_logged(out: Path, text: str, generation: int | None = None) -> bool:
    """Whether a worker's log (of `generation`, or any) holds `text`."""
    pattern = f"g{generation:04d}*.log" if generation is not None else "*.log"
    return any(text in log.read_text(errors="replace") for log in (out / "reports").glob(pattern))


def held_out_task_launched(out: Path) -> bool:
    """Whether the held-out validation's task was written (its seeds come from their own stream)."""
    for path in (out / "tasks").glob("*.json"):
        try:
            if json.loads(path.read_text()).get("seedStream"):
                return True
        except (OSError, json.JSONDecodeError):
            continue
    return False


def workers_of(out: Path) -> list[str]:
    """Command lines of running processes that work for the run writing to `out`."""
    found = subprocess.run(["pgrep", "-af", str(out.resolve())], capture_output=True, text=True, check=False)
    return [line for line in found.stdout.splitlines() if "sustaindiffusion.worker" in line]


def run_and_interrupt(
    spec: Path, out: Path, reached: Callable[[], bool], what: str, sig: int = signal.SIGINT
) -> Interrupted:
    """Start `sustaindiffusion run SPEC --out OUT`, send `sig` once `reached()` holds, wait for the
    exit. Fails if the run ends before the point is reached."""
    # Output to files, not pipes: a run that fills a pipe nobody reads yet would block.
    stdout_path, stderr_path = out.with_name(f"{out.name}.stdout"), out.with_name(f"{out.name}.stderr")
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        process = subprocess.Popen([*CLI, "run", str(spec), "--out", str(out)], stdout=stdout, stderr=stderr)
    try:

        def point_reached() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the run exited ({process.returncode}) before {what}")
            return reached()

        wait_until(point_reached, REACH_TIMEOUT_S, interval=0.1, what=what, fatal=(AssertionError,))
        signalled = time.monotonic()
        process.send_signal(sig)
        process.wait(timeout=EXIT_TIMEOUT_S)
        seconds = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return Interrupted(
        process.returncode, stdout_path.read_text(), stderr_path.read_text(), seconds, workers_of(out)
    )


def spec_file(directory: Path, generations: int = 2) -> Path:
    """A small search whose model paths are relative to the spec file, as in examples/quickstart.yaml."""
    (directory / "tiny-models").symlink_to(ensure_tiny_models())
    manifest = yaml.safe_load(QUICKSTART.read_text())
    manifest["spec"]["algorithm"] |= {"populationSize": 4, "generations": generations}
    manifest["spec"]["execution"]["candidatesPerPod"] = 2
    path = directory / "search.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def sustaindiffusion(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result
