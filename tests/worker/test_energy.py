"""Energy maths with a fake NVML and a fake powercap tree, so the real reading code runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sustaindiffusion.worker.energy import (
    CPU_ESTIMATE,
    NO_GPU,
    NVML_COUNTER,
    NVML_SAMPLING,
    RAPL,
    CpuEnergyMeter,
    EnergyMonitor,
    GpuEnergyMeter,
    WindowEnergy,
    integrate_power,
    rapl_delta_uj,
    rapl_zones,
)


class FakeNvml:
    """The pynvml functions the meter uses. Counter in mJ, power in mW; tests move them by hand."""

    def __init__(
        self, counter_mj: int | None = 1_000_000, power_mw: int = 300_000, mig: bool = False
    ) -> None:
        self.counter_mj, self.power_mw, self.mig = counter_mj, power_mw, mig
        self.processes: list[Any] = [object()]

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMigMode(self, handle: str) -> tuple[int, int]:
        return (1 if self.mig else 0, 0)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[Any]:
        return self.processes

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if self.counter_mj is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self.counter_mj

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        return self.power_mw


def test_nvml_counter_difference_is_the_window_energy() -> None:
    nvml = FakeNvml()
    meter = GpuEnergyMeter(nvml, sample_interval=0.01)
    assert meter.info.name == "NVIDIA H100 80GB HBM3"
    window = meter.start()
    nvml.counter_mj += 250_500  # 250.5 J
    reading = window.stop()
    assert reading.method == NVML_COUNTER
    assert reading.joules == pytest.approx(250.5)
    assert not reading.estimated
    assert reading.note == ""


def test_counter_reset_falls_back_to_power_samples() -> None:
    nvml = FakeNvml(power_mw=200_000)
    started = time.monotonic()
    window = GpuEnergyMeter(nvml, sample_interval=0.01).start()
    time.sleep(0.2)  # a window of some samples; its length is measured, not assumed
    nvml.counter_mj = 10  # the driver reloaded: the counter restarted below its start value
    reading = window.stop()
    elapsed = time.monotonic() - started
    assert reading.method == NVML_SAMPLING
    assert "reset" in reading.note
    assert reading.joules == pytest.approx(200.0 * elapsed, rel=0.25)


def test_missing_counter_uses_power_sampling() -> None:
    meter = GpuEnergyMeter(FakeNvml(counter_mj=None, power_mw=100_000), sample_interval=0.01)
    assert not meter.has_counter
    started = time.monotonic()
    window = meter.start()
    time.sleep(0.1)  # a window of some samples; its length is measured, not assumed
    reading = window.stop()
    elapsed = time.monotonic() - started
    assert reading.method == NVML_SAMPLING
    assert reading.joules == pytest.approx(100.0 * elapsed, rel=0.3)


def test_mig_and_shared_gpus_are_flagged() -> None:
    mig = GpuEnergyMeter(FakeNvml(mig=True))
    assert mig.info.mig
    assert not mig.info.attributable
    window = mig.start()
    assert "not attributable" in window.stop().note
    shared_nvml = FakeNvml()
    shared_nvml.processes = [object(), object()]
    assert GpuEnergyMeter(shared_nvml).info.shared


def test_trapezoidal_integration() -> None:
    assert integrate_power([(0.0, 100.0), (1.0, 200.0), (3.0, 200.0)]) == pytest.approx(150.0 + 400.0)
    assert integrate_power([(0.0, 50.0)]) == 0.0


def _zone(root: Path, name: str, energy: int, maximum: int) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "energy_uj").write_text(f"{energy}\n")
    (directory / "max_energy_range_uj").write_text(f"{maximum}\n")
    return directory / "energy_uj"


def test_rapl_wraparound() -> None:
    assert rapl_delta_uj(100, 350, 1000) == 250
    assert rapl_delta_uj(900, 100, 1000) == 200  # wrapped past 1000


def test_rapl_sums_packages_and_ignores_subzones(tmp_path: Path) -> None:
    package0 = _zone(tmp_path, "intel-rapl:0", 5_000_000, 10_000_000)
    package1 = _zone(tmp_path, "intel-rapl:1", 9_900_000, 10_000_000)
    _zone(tmp_path, "intel-rapl:0:0", 1_000, 10_000_000)  # a core sub-zone, already counted in its package
    assert [z.energy_file for z in rapl_zones(tmp_path)] == [package0, package1]
    meter = CpuEnergyMeter(tmp_path)
    started = meter.start()
    package0.write_text("7000000\n")  # +2 J
    package1.write_text("400000\n")  # wrapped: +0.5 J
    reading = meter.stop(started)
    assert reading.method == RAPL
    assert reading.joules == pytest.approx(2.5)
    assert not reading.estimated


def test_cpu_estimate_is_labelled(tmp_path: Path) -> None:
    seconds = iter([10.0, 12.5])
    meter = CpuEnergyMeter(tmp_path / "absent", watts_per_busy_core=8.0, cpu_seconds=lambda: next(seconds))
    reading = meter.stop(meter.start())
    assert reading.method == CPU_ESTIMATE
    assert reading.estimated
    assert reading.joules == pytest.approx(20.0)
    assert "estimate" in reading.note


def test_monitor_window_combines_components_and_synchronises(tmp_path: Path) -> None:
    calls: list[str] = []
    nvml = FakeNvml()
    monitor = EnergyMonitor(
        GpuEnergyMeter(nvml, sample_interval=0.01),
        CpuEnergyMeter(tmp_path / "absent", cpu_seconds=lambda: 0.0),
        synchronize=lambda: calls.append("sync"),
    )
    seen: list[WindowEnergy] = []
    monitor.listeners.append(seen.append)
    with monitor.window() as window:
        nvml.counter_mj += 1_000
    assert calls == ["sync", "sync"]
    assert window.value is not None
    assert window.value.gpu.joules == pytest.approx(1.0)
    assert window.value.estimated  # the CPU part is an estimate here
    assert seen == [window.value]
    assert monitor.methods == (NVML_COUNTER, CPU_ESTIMATE)


def test_monitor_without_gpu(tmp_path: Path) -> None:
    monitor = EnergyMonitor(None, CpuEnergyMeter(tmp_path / "absent", cpu_seconds=lambda: 0.0))
    with monitor.window() as window:
        pass
    assert window.value is not None
    assert window.value.gpu.method == NO_GPU
    assert monitor.device_name == "cpu"
