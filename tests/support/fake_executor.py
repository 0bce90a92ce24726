"""In-memory stand-ins for the generation loop's executor and archive, for loop-level unit tests.

`FakeExecutor` "runs" each launched round at once with the deterministic fake evaluator; a shard can
be made to settle otherwise (given up, or with an unusable report) or to report nothing yet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.search.ledger import Candidate
from sustaindiffusion.search.loop import Collected, ShardOutcome
from sustaindiffusion.search.records import ArchiveRecord
from tests.support.fake_evaluator import fake_task_result

# (task, shard) -> how the shard settles instead of a normal run, or None for a normal run
ShardFault = Callable[[EvaluationTask, int], ShardOutcome | None]


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
    faults: ShardFault = lambda task, shard: None
    held: set[int] = field(default_factory=set)  # generations whose shards report nothing yet
    tasks: dict[tuple[int, int], EvaluationTask] = field(default_factory=dict)  # (generation, round)
    launches: list[tuple[int, int]] = field(default_factory=list)
    released: list[int] = field(default_factory=list)

    def launched_tasks(self, generation: int) -> list[EvaluationTask]:
        return [task for (g, _), task in sorted(self.tasks.items()) if g == generation]

    def launch(self, task: EvaluationTask) -> None:
        key = (task.generation, task.round)
        if key not in self.tasks:
            self.tasks[key] = task
            self.launches.append(key)

    def collect(self, task: EvaluationTask) -> Collected:
        collected = Collected()
        if task.generation in self.held:
            return collected
        for shard in range(task.shard_count):
            outcome = self.faults(task, shard)
            if outcome is None:
                results = [
                    fake_task_result(Candidate(member.candidate_id, task.generation, member.settings), task)
                    for member in task.shard(shard)
                ]
                outcome = ShardOutcome(results=results)
            collected.shards[shard] = outcome
        return collected

    def release(self, generation: int) -> None:
        self.released.append(generation)
