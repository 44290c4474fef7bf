"""A sampler that always returns the same machine: for layout snapshots and pane tests."""

from __future__ import annotations

from dataclasses import replace

from rigdeck.core.telemetry.diagnosis import diagnose
from rigdeck.core.telemetry.snapshot import (
    CpuStats,
    DiskStats,
    GpuProcess,
    GpuStats,
    IoRates,
    MemoryStats,
    NetRates,
    Snapshot,
)

GiB = 1024**3


def gpu_box(*, vram_used: int = 9_600_000_000, gpus: int = 1) -> Snapshot:
    """A home GPU box: 8 cores, 32 GB RAM, an RTX 3080 (10 GB) nearly full of one python."""
    cards = tuple(
        GpuStats(
            index=i,
            name="NVIDIA GeForce RTX 3080",
            uuid=f"GPU-{i}",
            util_percent=87.0,
            memory_util_percent=40.0,
            memory_used=vram_used,
            memory_total=10_000_000_000,
            temperature_c=71.0,
            power_w=301.0,
            power_limit_w=320.0,
            fan_percent=None,  # unsupported: must show as N/A, not 0
            sm_clock_mhz=1905,
            mem_clock_mhz=9501,
            mem_clock_max_mhz=9501,
            memory_bus_width_bits=320,
            pcie_rx_bps=12.0 * 1024**2,
            pcie_tx_bps=1.0 * 1024**2,
            throttle_reasons=("power cap",),
            processes=(
                GpuProcess(
                    4121,
                    i,
                    9_400_000_000,
                    "compute",
                    "ana",
                    "python train.py --bs 8",
                    101.0,
                    6 * GiB,
                ),
                GpuProcess(
                    977, i, 150_000_000, "graphics", "ana", "/usr/lib/xorg/Xorg", 1.0, 90 * 1024**2
                ),
            ),
        )
        for i in range(gpus)
    )
    snap = Snapshot(
        taken_at="2026-01-01T00:00:00+00:00",
        monotonic=100.0,
        hostname="gpubox",
        uptime_s=3 * 86400 + 4 * 3600,
        cpu=CpuStats(
            percent=23.0,
            per_core=(10.0, 90.0, 20.0, 5.0, 0.0, 40.0, 12.0, 7.0),
            logical_cores=8,
            physical_cores=4,
            freq_mhz=3600.0,
            freq_max_mhz=4600.0,
            load_avg=(1.5, 1.2, 0.9),
            model="AMD Ryzen 7 3700X",
        ),
        memory=MemoryStats(
            total=32 * GiB,
            available=20 * GiB,
            used=12 * GiB,
            percent=37.5,
            swap_total=2 * GiB,
            swap_used=0,
            swap_percent=0.0,
        ),
        disks=(DiskStats("/", ("home", "HF cache"), 500 * GiB, 380 * GiB, 120 * GiB, 76.0),),
        disk_io=IoRates(5.0 * 1024**2, 1.0 * 1024**2),
        network=NetRates(2.0 * 1024**2, 0.5 * 1024**2),
        gpus=cards,
        gpu_status="ok",
        nvidia_driver="550.54.14",
    )
    return replace(snap, diagnosis=diagnose(snap))


def no_gpu_box() -> Snapshot:
    snap = replace(
        gpu_box(),
        gpus=(),
        gpu_status="no NVIDIA driver found (libnvidia-ml.so is "
        "missing): this machine shows CPU only",
        nvidia_driver=None,
    )
    return replace(snap, diagnosis=diagnose(snap))


class _NoNvml:
    def close(self) -> None:
        pass


class FixedSampler:
    """Duck-types TelemetrySampler: same ``sample()``/``close()``, one fixed reading."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.nvml = _NoNvml()
        self.samples = 0

    def first_reading(self) -> Snapshot:
        return self.snapshot

    def sample(self, *, host_processes: int = 0) -> Snapshot:
        self.samples += 1
        return self.snapshot

    def close(self) -> None:
        pass
