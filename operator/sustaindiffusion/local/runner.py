"""Running a search locally: the generation loop in this process, workers as their own processes.

The loop is the operator's (`sustaindiffusion.search.loop`); only the executor (worker processes,
`local.executor`) and the archive (DIR/archive.jsonl, `local.store`) differ. Results are archived
and fsync'd before the engine hears of them, so an interrupted run (Ctrl-C, crash, power loss)
resumes from the archive by deterministic replay and evaluates nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sustaindiffusion.api.spec import PromptSource, PromptsSpec
from sustaindiffusion.api.validation import SustainSearchManifest
from sustaindiffusion.local.executor import WORKER_MODULE, Fault, LocalExecutor
from sustaindiffusion.local.interrupt import NEVER, StopRequest
from sustaindiffusion.local.store import RunStore, StoreError
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.loop import GenerationLoop, Step


@dataclass
class Progress:
    """Callbacks for a progress display; all optional."""

    step: Callable[[SearchEngine, Step], None] = lambda engine, step: None


class LocalRunner:
    def __init__(
        self,
        manifest: SustainSearchManifest,
        spec_file: Path,
        store: RunStore,
        device: str = "auto",
        program: Sequence[str] = WORKER_MODULE,
        faults: Sequence[Fault] = (),
    ) -> None:
        spec = manifest.spec
        sources: list[tuple[str, PromptsSpec | PromptSource]] = [("prompts", spec.prompts)]
        if spec.validation is not None:
            sources.append(("validation.prompts", spec.validation.prompts))
        for field, source in sources:
            if source.config_map_ref is not None:
                raise StoreError(
                    f"spec.{field}.configMapRef ({source.config_map_ref.name}) needs a cluster; "
                    f"locally, give the prompts inline (spec.{field}.inline)"
                )
        self.manifest, self.store = manifest, store
        store.open(spec, manifest.name)
        self.executor = LocalExecutor(
            store, spec, device, models_base=spec_file.resolve().parent, program=program, faults=faults
        )
        self.loop = GenerationLoop(
            manifest.name,
            spec,
            store,
            self.executor,
            prompts=lambda: list(spec.prompts.inline or []),
            save_images=spec.execution.artifacts is None or spec.execution.artifacts.save_images,
            validation_prompts=lambda: list(spec.validation.prompts.inline or []) if spec.validation else [],
        )

    @property
    def engine(self) -> SearchEngine:
        return self.loop.engine

    def run(self, progress: Progress | None = None, stop: StopRequest = NEVER) -> Step | None:
        """Step the loop until the search finishes and return the last step; or, once `stop` is
        requested, stop the workers after the step in hand (its results are archived) and return
        None. Run the same spec again on the same store to resume."""
        progress = progress or Progress()
        while not stop.requested:
            step = self.loop.step(self.store.previous_status())
            self.store.write_status(step.status.model_dump(mode="json", by_alias=True, exclude_none=True))
            progress.step(self.engine, step)
            if step.finished:
                return step
            if not step.progressed:
                self.executor.wait(stop=stop)
        self.interrupt()
        return None

    def interrupt(self) -> None:
        self.executor.interrupt()
