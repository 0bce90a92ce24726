"""The operator's /metrics: one snapshot per search, exposed by a custom collector.

Totals are recomputed from the archive (the source of truth), so they survive operator restarts
and are exposed as counters (`_total`) that never go backwards for a given search. Labels are
bounded: namespace, search, and small fixed sets (state, component, objective, stat).
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sustaindiffusion.search.engine import SearchEngine


@dataclass(frozen=True)
class SearchSnapshot:
    generation: int
    evaluations: dict[str, int]  # state -> count: succeeded, failed, running
    energy_joules: dict[str, float]  # component -> joules: gpu, cpu
    hypervolume: float
    front_size: int
    front_objectives: dict[str, list[float]] = field(default_factory=dict)
    finished: bool = False
    queued: bool = False  # the generation's workers are held back by a queue (Kueue) now
    queued_seconds: float = 0.0  # in all, since this operator process took the search up

    @classmethod
    def of(
        cls, engine: SearchEngine, running: int, queued: bool = False, queued_seconds: float = 0.0
    ) -> SearchSnapshot:
        front = engine.front()
        gpu, cpu = engine.ledger.energy_joules()
        objectives: dict[str, list[float]] = {}
        for point in front:
            for name, value in point.objectives.items():
                objectives.setdefault(name, []).append(value)
        return cls(
            generation=engine.generation,
            evaluations={
                "succeeded": engine.evaluations - engine.failures,
                "failed": engine.failures,
                "running": running,
            },
            energy_joules={"gpu": gpu, "cpu": cpu},
            hypervolume=engine.hypervolume_history[-1] if engine.hypervolume_history else 0.0,
            front_size=len(front),
            front_objectives=objectives,
            finished=engine.outcome().finished,
            queued=queued,
            queued_seconds=queued_seconds,
        )


class SearchMetrics(Collector):
    def __init__(self) -> None:
        self._snapshots: dict[tuple[str, str], SearchSnapshot] = {}
        self._lock = threading.Lock()

    def update(self, namespace: str, name: str, snapshot: SearchSnapshot) -> None:
        with self._lock:
            self._snapshots[(namespace, name)] = snapshot

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._snapshots.pop((namespace, name), None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshots = dict(self._snapshots)
        keys = ["namespace", "search"]
        generation = GaugeMetricFamily(
            "sustaindiffusion_search_generation",
            "Current search generation (0 is the baseline).",
            labels=keys,
        )
        finished = GaugeMetricFamily(
            "sustaindiffusion_search_finished", "1 once the search has ended.", labels=keys
        )
        evaluations = GaugeMetricFamily(
            "sustaindiffusion_search_evaluations", "Candidate evaluations by state.", labels=[*keys, "state"]
        )
        energy = CounterMetricFamily(
            "sustaindiffusion_search_energy_joules",
            "Energy of all evaluations of the search, by component (CPU, GPU).",
            labels=[*keys, "component"],
        )
        hypervolume = GaugeMetricFamily(
            "sustaindiffusion_search_hypervolume",
            "Hypervolume of the Pareto front (normalised objectives).",
            labels=keys,
        )
        front_size = GaugeMetricFamily(
            "sustaindiffusion_search_front_size", "Pareto-front size.", labels=keys
        )
        front_objective = GaugeMetricFamily(
            "sustaindiffusion_search_front_objective",
            "Objective values over the Pareto front (min, median, max).",
            labels=[*keys, "objective", "stat"],
        )
        queued = GaugeMetricFamily(
            "sustaindiffusion_search_queued",
            "1 while the generation's workers are held back by a queue (Kueue), else 0.",
            labels=keys,
        )
        queued_seconds = CounterMetricFamily(
            "sustaindiffusion_search_queued_seconds",
            "Seconds the search's workers spent held back by a queue (Kueue), since this operator "
            "process took the search up.",
            labels=keys,
        )
        for (namespace, name), snapshot in sorted(snapshots.items()):
            base = [namespace, name]
            generation.add_metric(base, snapshot.generation)
            finished.add_metric(base, float(snapshot.finished))
            for state, count in snapshot.evaluations.items():
                evaluations.add_metric([*base, state], count)
            for component, joules in snapshot.energy_joules.items():
                energy.add_metric([*base, component], joules)
            hypervolume.add_metric(base, snapshot.hypervolume)
            queued.add_metric(base, float(snapshot.queued))
            queued_seconds.add_metric(base, snapshot.queued_seconds)
            front_size.add_metric(base, snapshot.front_size)
            for objective, values in snapshot.front_objectives.items():
                for stat, value in (
                    ("min", min(values)),
                    ("median", statistics.median(values)),
                    ("max", max(values)),
                ):
                    front_objective.add_metric([*base, objective, stat], value)
        yield from (
            generation,
            finished,
            evaluations,
            energy,
            hypervolume,
            front_size,
            front_objective,
            queued,
            queued_seconds,
        )


WORK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class WorkMetrics:
    """The supervisor's timings, as a controller's work-queue metrics: how long a due search
    waits for a worker, and how long one step of a search takes (its API calls included)."""

    def __init__(self) -> None:
        self.queue_wait = Histogram(
            "sustaindiffusion_operator_queue_wait_seconds",
            "Time a search that is due waits for a worker.",
            buckets=WORK_BUCKETS,
            registry=None,
        )
        self.step = Histogram(
            "sustaindiffusion_operator_step_seconds",
            "Time one step of a search takes.",
            buckets=WORK_BUCKETS,
            registry=None,
        )

    def waited(self, seconds: float) -> None:
        self.queue_wait.observe(seconds)

    def stepped(self, seconds: float) -> None:
        self.step.observe(seconds)


def serve_metrics(
    port: int, collector: SearchMetrics, address: str = "0.0.0.0", work: WorkMetrics | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    if work is not None:
        registry.register(work.queue_wait)
        registry.register(work.step)
    start_http_server(port, addr=address, registry=registry)
    return registry
