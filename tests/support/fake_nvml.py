"""A stand-in for the pynvml module that raises the library's own error classes.

It reproduces what real drivers do: per-field NotSupported (fans on datacentre cards), a driver
that is not loaded, a library that is missing, and a GPU lost in the middle of a run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml


@dataclass
class FakeGpu:
    name: str = "NVIDIA GeForce RTX 3080"
    total: int = 10 * 1024**3
    used: int = 2 * 1024**3
    util: int = 37
    mem_util: int = 20
    temperature: int = 61
    power_mw: int = 215_000
    power_limit_mw: int = 320_000
    fan: int = 45
    sm_clock: int = 1710
    mem_clock: int = 9501
    mem_clock_max: int = 9501
    bus_width: int = 320
    pcie_kbps: tuple[int, int] = (1200, 300)  # rx, tx
    throttle: int = 0
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, used bytes)
    unsupported: set[str] = field(default_factory=set)
    lost: bool = False


class FakeNvml:
    """Module-shaped: NvmlReader only touches attributes pynvml really has."""

    def __init__(self, gpus: list[FakeGpu] | None = None, *, init_error: str | None = None):
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.init_error = init_error
        self.calls = 0
        self.shutdowns = 0
        for name in dir(pynvml):
            if name.startswith(("NVMLError", "NVML_", "nvmlClocksThrottleReason")):
                setattr(self, name, getattr(pynvml, name))

    # -- library level ---------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if self.init_error == "library":
            raise pynvml.NVMLError_LibraryNotFound()
        if self.init_error == "driver":
            raise pynvml.NVMLError_DriverNotLoaded()
        if self.init_error == "permission":
            raise pynvml.NVMLError_NoPermission()

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.14"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        return self.gpus[i]

    # -- per device ------------------------------------------------------------------------
    def _field(self, gpu: FakeGpu, name: str) -> None:
        self.calls += 1
        if gpu.lost:
            raise pynvml.NVMLError_GpuIsLost()
        if name in gpu.unsupported:
            raise pynvml.NVMLError_NotSupported()

    def nvmlDeviceGetName(self, g: FakeGpu) -> str:
        self._field(g, "name")
        return g.name

    def nvmlDeviceGetUUID(self, g: FakeGpu) -> str:
        self._field(g, "uuid")
        return f"GPU-{abs(hash(g.name)) % 10**8:08d}"

    def nvmlDeviceGetMemoryInfo(self, g: FakeGpu) -> Any:
        self._field(g, "memory")
        return SimpleNamespace(total=g.total, used=g.used, free=g.total - g.used)

    def nvmlDeviceGetUtilizationRates(self, g: FakeGpu) -> Any:
        self._field(g, "util")
        return SimpleNamespace(gpu=g.util, memory=g.mem_util)

    def nvmlDeviceGetTemperature(self, g: FakeGpu, sensor: int) -> int:
        self._field(g, "temperature")
        return g.temperature

    def nvmlDeviceGetPowerUsage(self, g: FakeGpu) -> int:
        self._field(g, "power")
        return g.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, g: FakeGpu) -> int:
        self._field(g, "power_limit")
        return g.power_limit_mw

    def nvmlDeviceGetFanSpeed(self, g: FakeGpu) -> int:
        self._field(g, "fan")
        return g.fan

    def nvmlDeviceGetClockInfo(self, g: FakeGpu, clock: int) -> int:
        self._field(g, "clocks")
        return g.sm_clock if clock == pynvml.NVML_CLOCK_SM else g.mem_clock

    def nvmlDeviceGetMaxClockInfo(self, g: FakeGpu, clock: int) -> int:
        self._field(g, "max_clocks")
        return g.mem_clock_max

    def nvmlDeviceGetMemoryBusWidth(self, g: FakeGpu) -> int:
        self._field(g, "bus_width")
        return g.bus_width

    def nvmlDeviceGetPcieThroughput(self, g: FakeGpu, counter: int) -> int:
        self._field(g, "pcie")
        return g.pcie_kbps[0] if counter == pynvml.NVML_PCIE_UTIL_RX_BYTES else g.pcie_kbps[1]

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, g: FakeGpu) -> int:
        self._field(g, "throttle")
        return g.throttle

    def nvmlDeviceGetComputeRunningProcesses(self, g: FakeGpu) -> list[Any]:
        self._field(g, "processes")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in g.processes]

    def nvmlDeviceGetGraphicsRunningProcesses(self, g: FakeGpu) -> list[Any]:
        self._field(g, "graphics_processes")
        return []


def this_process_on_gpu(used: int = 1024**3) -> list[tuple[int, int]]:
    """A GPU process list naming a real pid, so psutil can describe it."""
    return [(os.getpid(), used)]
