"""Energy of a measurement window: GPU through NVML, CPU through RAPL powercap, estimates labelled.

GPU: NVML's total-energy counter (millijoules since driver load). Where the counter is missing or
resets inside the window (its end reading is below its start), the energy comes from power samples
taken through the window by a background thread. MIG instances and GPUs shared with other
processes cannot attribute energy to us: the result says so.

CPU: RAPL `energy_uj` of every package zone under /sys/class/powercap, with wraparound at
`max_energy_range_uj`. Where RAPL is absent (as on most cloud VMs and these CI machines), the CPU
energy is an estimate: process CPU seconds times an assumed power per busy core, labelled so.

Each window records its method per component, and nothing estimated is passed off as measured.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from sustaindiffusion.api.results import Device

NVML_COUNTER = "nvml-total-energy"
NVML_SAMPLING = "nvml-power-sampling"
NO_GPU = "none"
RAPL = "rapl-powercap"
CPU_ESTIMATE = "estimate-cpu-seconds"
DEFAULT_WATTS_PER_BUSY_CORE = 10.0
SAMPLE_INTERVAL_S = 0.05


@dataclass(frozen=True)
class EnergyReading:
    joules: float
    method: str
    estimated: bool
    note: str = ""


@dataclass(frozen=True)
class WindowEnergy:
    gpu: EnergyReading
    cpu: EnergyReading
    seconds: float

    @property
    def total_joules(self) -> float:
        return self.gpu.joules + self.cpu.joules

    @property
    def estimated(self) -> bool:
        return self.gpu.estimated or self.cpu.estimated


# ----------------------------------------------------------------------------- GPU


@dataclass
class GpuInfo:
    name: str = ""
    mig: bool = False
    shared: bool = False
    driver: str | None = None
    mig_profile: str | None = None  # the MIG instance's name, when the GPU is split into instances

    @property
    def attributable(self) -> bool:
        return not (self.mig or self.shared)


class GpuEnergyMeter:
    """NVML energy of one GPU. `nvml` is the pynvml module, or a fake with the same functions."""

    def __init__(
        self, nvml: ModuleType | Any, index: int = 0, sample_interval: float = SAMPLE_INTERVAL_S
    ) -> None:
        self.nvml = nvml
        nvml.nvmlInit()
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.sample_interval = sample_interval
        self.info = GpuInfo(name=_text(nvml.nvmlDeviceGetName(self.handle)))
        with contextlib.suppress(Exception):
            self.info.driver = _text(nvml.nvmlSystemGetDriverVersion())
        with contextlib.suppress(Exception):
            current, _pending = nvml.nvmlDeviceGetMigMode(self.handle)
            self.info.mig = bool(current)
        if self.info.mig:
            self.info.mig_profile = "MIG"
            with contextlib.suppress(Exception):
                instance = nvml.nvmlDeviceGetMigDeviceHandleByIndex(self.handle, 0)
                self.info.mig_profile = _text(nvml.nvmlDeviceGetName(instance))
        with contextlib.suppress(Exception):
            # Another process on our GPU means its energy is not ours alone (time-slicing, MPS).
            others = nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
            self.info.shared = len(others) > 1
        self.has_counter = self.read_counter() is not None

    def read_counter(self) -> float | None:
        """The GPU's total-energy counter in joules, or None where the driver has none."""
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)) / 1000.0  # mJ -> J
        except Exception:
            return None

    def read_power(self) -> float | None:
        """The GPU's power draw in watts now, or None where it cannot be read."""
        try:
            return float(self.nvml.nvmlDeviceGetPowerUsage(self.handle)) / 1000.0  # mW -> W
        except Exception:
            return None

    def start(self) -> _GpuWindow:
        window = _GpuWindow(self, self.read_counter())
        window.start_sampling()
        return window


@dataclass
class _GpuWindow:
    meter: GpuEnergyMeter
    start_counter: float | None
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start_sampling(self) -> None:
        self._sample()
        self._thread = threading.Thread(target=self._run, name="nvml-power-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        watts = self.meter.read_power()
        if watts is not None:
            self.samples.append((time.monotonic(), watts))

    def _run(self) -> None:
        while not self._stop.wait(self.meter.sample_interval):
            self._sample()

    def stop(self) -> EnergyReading:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        end_counter = self.meter.read_counter()
        note = "" if self.meter.info.attributable else "energy not attributable: MIG instance or shared GPU"
        if self.start_counter is not None and end_counter is not None and end_counter >= self.start_counter:
            return EnergyReading(end_counter - self.start_counter, NVML_COUNTER, estimated=False, note=note)
        reset = self.start_counter is not None and end_counter is not None
        integrated = integrate_power(self.samples)
        if reset:
            note = "; ".join(filter(None, [note, "energy counter reset in the window"]))
        return EnergyReading(integrated, NVML_SAMPLING, estimated=False, note=note)


def integrate_power(samples: list[tuple[float, float]]) -> float:
    """Joules from (monotonic seconds, watts) samples by the trapezoidal rule."""
    return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in itertools.pairwise(samples))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_gpu_meter(index: int = 0) -> GpuEnergyMeter | None:
    """The NVML meter of GPU `index`, or None where there is no NVIDIA driver."""
    try:
        import pynvml  # noqa: PLC0415 - optional: absent drivers are normal on CPU machines

        return GpuEnergyMeter(pynvml, index)
    except Exception:
        return None


# ----------------------------------------------------------------------------- CPU


@dataclass(frozen=True)
class RaplZone:
    energy_file: Path
    max_range_uj: int


def rapl_zones(root: Path = Path("/sys/class/powercap")) -> list[RaplZone]:
    """Top-level RAPL package zones (intel-rapl:N, not their sub-zones, which they include)."""
    zones = []
    for directory in sorted(root.glob("intel-rapl:*")):
        if directory.name.count(":") != 1:
            continue
        energy, maximum = directory / "energy_uj", directory / "max_energy_range_uj"
        try:
            int(energy.read_text())
            zones.append(RaplZone(energy, int(maximum.read_text())))
        except (OSError, ValueError):
            continue  # unreadable without privileges: treated as absent
    return zones


def rapl_delta_uj(start: int, end: int, max_range_uj: int) -> int:
    """Microjoules between two readings of a counter that wraps at `max_range_uj`."""
    return end - start if end >= start else end + max_range_uj - start


class CpuEnergyMeter:
    def __init__(
        self,
        powercap_root: Path = Path("/sys/class/powercap"),
        watts_per_busy_core: float = DEFAULT_WATTS_PER_BUSY_CORE,
        cpu_seconds: Callable[[], float] | None = None,
    ) -> None:
        self.zones = rapl_zones(powercap_root)
        self.watts_per_busy_core = watts_per_busy_core
        self._cpu_seconds = cpu_seconds or _process_cpu_seconds

    @property
    def method(self) -> str:
        return RAPL if self.zones else CPU_ESTIMATE

    def start(self) -> tuple[list[int], float]:
        return [int(zone.energy_file.read_text()) for zone in self.zones], self._cpu_seconds()

    def stop(self, started: tuple[list[int], float]) -> EnergyReading:
        start_uj, start_cpu = started
        if self.zones:
            total_uj = sum(
                rapl_delta_uj(begin, int(zone.energy_file.read_text()), zone.max_range_uj)
                for zone, begin in zip(self.zones, start_uj, strict=True)
            )
            return EnergyReading(total_uj / 1e6, RAPL, estimated=False, note="whole CPU packages")
        busy = max(0.0, self._cpu_seconds() - start_cpu)
        return EnergyReading(
            busy * self.watts_per_busy_core,
            CPU_ESTIMATE,
            estimated=True,
            note=f"estimate: {busy:.2f} CPU seconds x {self.watts_per_busy_core:g} W per busy core",
        )


def _process_cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


# ----------------------------------------------------------------------------- windows


class EnergyMonitor:
    """Opens measurement windows over the GPU (if any) and the CPU, synchronised with the device."""

    def __init__(
        self,
        gpu: GpuEnergyMeter | None,
        cpu: CpuEnergyMeter,
        synchronize: Callable[[], None] = lambda: None,
    ) -> None:
        self.gpu, self.cpu, self.synchronize = gpu, cpu, synchronize
        self.listeners: list[Callable[[WindowEnergy], None]] = []

    @property
    def device_name(self) -> str:
        return self.gpu.info.name if self.gpu else "cpu"

    def device(self) -> Device:
        """The device results are measured on, and how each energy component is obtained."""
        gpu_method, cpu_method = self.methods
        info = self.gpu.info if self.gpu else GpuInfo(name="cpu")
        return Device(
            name=info.name,
            driver=info.driver,
            mig_profile=info.mig_profile,
            shared=info.shared,
            gpu_energy=gpu_method,
            cpu_energy=cpu_method,
        )

    @property
    def methods(self) -> tuple[str, str]:
        gpu_method = NO_GPU if self.gpu is None else (NVML_COUNTER if self.gpu.has_counter else NVML_SAMPLING)
        return gpu_method, self.cpu.method

    @contextlib.contextmanager
    def window(self) -> Any:
        """`with monitor.window() as result:` ... then `result.value` holds the WindowEnergy."""
        holder = _WindowResult()
        self.synchronize()  # work queued before the window is not ours
        gpu_window = self.gpu.start() if self.gpu else None
        cpu_start = self.cpu.start()
        started = time.perf_counter()
        try:
            yield holder
        finally:
            self.synchronize()  # work queued inside the window must finish inside it
            seconds = time.perf_counter() - started
            gpu = (
                gpu_window.stop()
                if gpu_window
                else EnergyReading(0.0, NO_GPU, estimated=False, note="no GPU")
            )
            holder.value = WindowEnergy(gpu=gpu, cpu=self.cpu.stop(cpu_start), seconds=seconds)
            for listener in self.listeners:
                listener(holder.value)


@dataclass
class _WindowResult:
    value: WindowEnergy | None = None
