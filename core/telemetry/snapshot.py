"""One immutable reading of the machine: what the panes render and the diagnosis reads.

Every field a platform or GPU cannot give is ``None`` (shown as N/A), never an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ``Snapshot.gpu_status`` of a first, host-only reading: NVML has not been asked yet.
GPU_PENDING = "reading GPUs…"


@dataclass(frozen=True)
class CpuStats:
    percent: float
    per_core: tuple[float, ...]
    logical_cores: int
    physical_cores: int | None
    freq_mhz: float | None
    freq_max_mhz: float | None
    load_avg: tuple[float, float, float] | None
    model: str


@dataclass(frozen=True)
class MemoryStats:
    total: int
    available: int
    used: int
    percent: float
    swap_total: int
    swap_used: int
    swap_percent: float


@dataclass(frozen=True)
class DiskStats:
    """Space on one mount, with the reasons it matters (``home``, ``HF cache``, a model dir)."""

    mount: str
    labels: tuple[str, ...]
    total: int
    used: int
    free: int
    percent: float


@dataclass(frozen=True)
class IoRates:
    """Bytes per second since the previous sample; ``None`` on the first one."""

    read_bps: float | None = None
    write_bps: float | None = None


@dataclass(frozen=True)
class NetRates:
    rx_bps: float | None = None
    tx_bps: float | None = None


@dataclass(frozen=True)
class GpuProcess:
    """A process worth showing: one using a GPU, or (no GPU) one of the host's largest."""

    pid: int
    gpu_index: int | None
    gpu_memory: int | None
    kind: str  # "compute", "graphics" or "host"
    user: str | None
    command: str
    cpu_percent: float | None
    rss: int | None


@dataclass(frozen=True)
class GpuStats:
    index: int
    name: str
    uuid: str | None
    util_percent: float | None
    memory_util_percent: float | None
    memory_used: int | None
    memory_total: int | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    fan_percent: float | None
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    mem_clock_max_mhz: int | None
    memory_bus_width_bits: int | None
    pcie_rx_bps: float | None
    pcie_tx_bps: float | None
    throttle_reasons: tuple[str, ...] = ()
    processes: tuple[GpuProcess, ...] = ()
    lost: bool = False

    @property
    def memory_free(self) -> int | None:
        if self.memory_used is None or self.memory_total is None:
            return None
        return max(self.memory_total - self.memory_used, 0)

    @property
    def bandwidth_bytes_per_s(self) -> float | None:
        """Theoretical memory bandwidth from the max memory clock and bus width.

        NVML reports the memory clock as the command clock; DDR-style memory moves data on both
        edges, so bytes/s = clock * 2 * bus_width / 8. Good enough to predict decode speed.
        """
        if not self.mem_clock_max_mhz or not self.memory_bus_width_bits:
            return None
        return self.mem_clock_max_mhz * 1e6 * 2 * self.memory_bus_width_bits / 8


@dataclass(frozen=True)
class Diagnosis:
    """What limits ML work on this machine right now, with the numbers behind it."""

    limit: str  # "vram" | "ram" | "cpu" | "disk" | "none"
    headline: str
    facts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    taken_at: str  # UTC ISO-8601
    monotonic: float
    hostname: str
    uptime_s: float
    cpu: CpuStats
    memory: MemoryStats
    disks: tuple[DiskStats, ...]
    disk_io: IoRates
    network: NetRates
    gpus: tuple[GpuStats, ...]
    gpu_status: str  # "ok", or one line saying why there are no GPU readings
    diagnosis: Diagnosis = field(default_factory=lambda: Diagnosis("none", "not diagnosed"))
    nvidia_driver: str | None = None
    host_processes: tuple[GpuProcess, ...] = ()
