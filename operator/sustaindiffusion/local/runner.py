"""Running a search locally: the engine in this process, the worker in worker processes.

Each generation's candidates that still need a result are split into shards of
`execution.candidatesPerPod`, and each shard runs as `python -m sustaindiffusion.worker run`, like
a pod, writing its report to DIR/reports. Results are appended to DIR/archive.jsonl (and fsync'd)
before the engine hears of them, so an interrupted run (Ctrl-C, crash, power loss) resumes from the
archive by deterministic replay and evaluates nothing twice.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sustaindiffusion.api.results import EvaluationResult
from sustaindiffusion.api.status import Phase
from sustaindiffusion.api.task import EvaluationTask, TaskCandidate
from sustaindiffusion.api.validation import SustainSearchManifest
from sustaindiffusion.api.wire import REASON_LIMIT, decode_report
from sustaindiffusion.local.store import RunStore
from sustaindiffusion.operator.archive import ArchiveRecord
from sustaindiffusion.operator.engine.search import Candidate, SearchEngine
from sustaindiffusion.operator.status import ConditionUpdate, Observation, build_status, now

EXIT_RETRYABLE = 75
_CANDIDATE_DONE = re.compile(r"candidate ([0-9a-f]{16}): (Succeeded|Failed)")


@dataclass
class Progress:
    """Callbacks for a progress display; all optional."""

    generation_started: Callable[[int, int], None] = lambda generation, candidates: None
    candidate_done: Callable[[str, bool], None] = lambda candidate_id, ok: None
    generation_done: Callable[[SearchEngine], None] = lambda engine: None


class LocalRunner:
    def __init__(
        self, manifest: SustainSearchManifest, spec_file: Path, store: RunStore, device: str = "auto"
    ) -> None:
        self.manifest, self.spec_file, self.store, self.device = manifest, spec_file, store, device
        self._worker: subprocess.Popen[str] | None = None

    def resume(self) -> tuple[SearchEngine, int]:
        """The engine rebuilt from the archive, and how many results that replayed."""
        self.store.open(self.manifest.spec, self.manifest.name)
        records = self.store.records()
        return SearchEngine.replay(self.manifest.spec, [r.result for r in records]), len(records)

    def run(self, engine: SearchEngine, progress: Progress) -> SearchEngine:
        started = now()
        while not engine.finished:
            generation = engine.generation
            missing = engine.ask()
            progress.generation_started(generation, len(missing))
            size = self.manifest.spec.execution.candidates_per_pod
            for start in range(0, len(missing), size):
                shard = missing[start : start + size]
                results = self._run_worker(generation, shard, progress)
                records = [ArchiveRecord(generation, r) for r in results]
                self.store.append(records)  # durable first ...
                for record in records:
                    engine.tell(record.result)  # ... then the engine
            progress.generation_done(engine)
            self._write_status(engine, started)
        return engine

    def interrupt(self) -> None:
        worker = self._worker
        if worker is not None and worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)

    def _task(self, generation: int, shard: list[Candidate]) -> EvaluationTask:
        spec = self.manifest.spec
        prompts = list(spec.prompts.inline or [])
        reference = spec.prompts.config_map_ref
        if reference is not None:
            raise ValueError(
                f"spec.prompts.configMapRef ({reference.name}) needs a cluster; locally, give prompts inline"
            )
        return EvaluationTask.of(
            self.manifest.name,
            spec,
            generation,
            prompts,
            [TaskCandidate(candidate_id=c.candidate_id, settings=c.settings) for c in shard],
            candidates_per_shard=len(shard),
            save_images=bool(spec.execution.artifacts is None or spec.execution.artifacts.save_images),
        )

    def _run_worker(
        self, generation: int, shard: list[Candidate], progress: Progress
    ) -> list[EvaluationResult]:
        """Run one worker process over `shard`; retry once if it fails transiently."""
        task = self._task(generation, shard)
        label = f"g{generation:04d}-{shard[0].candidate_id}"
        task_path = self.store.tasks / f"{label}.json"
        task_path.write_text(task.model_dump_json(by_alias=True))
        report_path = self.store.reports / f"{label}.json"
        for attempt in range(2):
            code = self._spawn(task_path, report_path, progress)
            report = None
            with contextlib.suppress(OSError, ValueError):
                report = decode_report(report_path.read_text())
            if code == 0 and report is not None:
                by_id = {r.candidate_id: r for r in report.results}
                return [
                    by_id.get(c.candidate_id) or EvaluationResult.failed(c.candidate_id, "no result reported")
                    for c in shard
                ]
            if code != EXIT_RETRYABLE or attempt == 1:
                fatal = (
                    report.fatal if report is not None and report.fatal else f"worker exited with code {code}"
                )
                return [EvaluationResult.failed(c.candidate_id, fatal[:REASON_LIMIT]) for c in shard]
        raise AssertionError("unreachable")

    def _spawn(self, task_path: Path, report_path: Path, progress: Progress) -> int:
        report_path.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "sustaindiffusion.worker",
            "run",
            "--task",
            str(task_path),
            "--termination-log",
            str(report_path),
            "--artifacts",
            str(self.store.artifacts),
            "--models-base",
            str(self.spec_file.resolve().parent),
            "--device",
            self.device,
        ]
        log_path = report_path.with_suffix(".log")
        with log_path.open("w") as log:
            self._worker = subprocess.Popen(
                command, stdout=log, stderr=subprocess.PIPE, text=True, start_new_session=True
            )
            assert self._worker.stderr is not None
            for line in self._worker.stderr:
                log.write(line)
                match = _CANDIDATE_DONE.search(line)
                if match:
                    progress.candidate_done(match.group(1), match.group(2) == "Succeeded")
            code = self._worker.wait()
        self._worker = None
        return code

    def _write_status(self, engine: SearchEngine, started: str) -> None:
        finished = engine.finished
        phase = Phase.RUNNING
        if finished:
            phase = Phase.FAILED if engine.scales is None else Phase.SUCCEEDED
        observation = Observation(
            phase=phase,
            observed_generation=1,
            running=0,
            conditions=[
                ConditionUpdate(
                    "Complete", phase is Phase.SUCCEEDED, "SearchFinished" if finished else "Running"
                )
            ],
            message=engine.termination_reason,
            start_time=started,
            completion_time=now() if finished else None,
        )
        status = build_status(engine, observation, [], self.manifest.spec.reporting.max_front_entries)
        self.store.write_status(status.model_dump(mode="json", by_alias=True, exclude_none=True))
