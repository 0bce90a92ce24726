"""The worker's live /metrics: energy by component, images, outcomes, served over HTTP."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sustaindiffusion.worker.energy import CpuEnergyMeter, EnergyMonitor, EnergyReading, WindowEnergy
from sustaindiffusion.worker.live_metrics import WorkerMetrics
from tests.support.slots import free_port


def test_metrics_are_recorded_and_served(tmp_path: Path) -> None:
    metrics = WorkerMetrics("my-search", 3)
    metrics.record_window(
        WindowEnergy(
            EnergyReading(12.5, "nvml-total-energy", False), EnergyReading(2.0, "rapl-powercap", False), 1.0
        )
    )
    metrics.images.inc(4)
    metrics.record_outcome(ok=True)
    metrics.record_outcome(ok=False)
    port = free_port()
    metrics.serve(port)
    metrics.watch_power(EnergyMonitor(None, CpuEnergyMeter(tmp_path)))
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    base = (("generation", "3"), ("search", "my-search"))

    def value(name: str, **extra: str) -> float:
        return samples[(name, tuple(sorted(base + tuple(extra.items()))))]

    assert value("sustaindiffusion_worker_energy_joules_total", component="gpu") == 12.5
    assert value("sustaindiffusion_worker_energy_joules_total", component="cpu") == 2.0
    assert value("sustaindiffusion_worker_images_total") == 4.0
    assert value("sustaindiffusion_worker_candidates_total", outcome="failed") == 1.0
    assert value("sustaindiffusion_worker_candidates_total", outcome="succeeded") == 1.0
    metrics.stop()
