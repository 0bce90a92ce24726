"""In-memory stand-ins for the generation loop's executor and archive, for loop-level unit tests.

`FakeExecutor` "runs" each launched shard at once with the deterministic fake evaluator; a shard
can be made to fail (given up with a reason) or to report nothing yet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.search.engine import Candidate
from sustaindiffusion.search.loop import Collected
from sustaindiffusion.search.records import ArchiveRecord
from tests.support.fake_evaluator import fake_evaluate

# (generation, shard) -> a reason to give the shard up, or None for a normal run
ShardFault = Callable[[int, int], str | None]


@dataclass
class MemoryArchive:
    records: list[ArchiveRecord] = field(default_factory=list)
    fail_next_append: bool = False

    def read(self) -> list[ArchiveRecord]:
        return list(self.records)

    def append(self, records: Sequence[ArchiveRecord]) -> None:
        if self.fail_next_append:
            self.fail_next_append = False
            raise ConnectionError("the archive store went away")
        self.records.extend(records)


@dataclass
class FakeExecutor:
    faults: ShardFault = lambda generation, shard: None
    held: set[int] = field(default_factory=set)  # generations whose shards report nothing yet
    tasks: dict[int, EvaluationTask] = field(default_factory=dict)
    launches: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)

    def launched_task(self, generation: int) -> EvaluationTask | None:
        return self.tasks.get(generation)

    def launch(self, task: EvaluationTask) -> bool:
        if task.generation in self.tasks:
            return False
        self.tasks[task.generation] = task
        self.launches.append(task.generation)
        return True

    def collect(self, task: EvaluationTask) -> Collected:
        collected = Collected()
        if task.generation in self.held:
            return collected
        for shard in range(task.shard_count):
            reason = self.faults(task.generation, shard)
            if reason is not None:
                collected.failed_shards[shard] = reason
                continue
            for member in task.shard(shard):
                candidate = Candidate(member.candidate_id, task.generation, member.settings)
                collected.results.append((shard, fake_evaluate(candidate)))
        return collected

    def release(self, generation: int) -> None:
        self.released.append(generation)
