"""What a fit may use, and where that comes from: this machine's latest Snapshot, sizes a user
typed, or a cloud offer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rigdeck.core.errors import FitError
from rigdeck.core.models.fit import speed
from rigdeck.core.telemetry.snapshot import Snapshot
from rigdeck.core.units import parse_size

# llama.cpp repacks these weight types for faster CPU matmuls (x86 AVX2 / Arm dot-product).
DEFAULT_CPU_REPACK_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"})


@dataclass(frozen=True)
class GpuBudget:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    bandwidth_bytes_per_s: float | None = None
    compute_capability: tuple[int, int] | None = None
    flops: float | None = None
    """Dense fp16 FLOP/s; None: from the name table."""


@dataclass(frozen=True)
class HardwareBudget:
    gpus: tuple[GpuBudget, ...]
    ram_total_bytes: int
    ram_available_bytes: int
    cpu_threads: int
    """Threads generation uses (llama.cpp's default: one per physical core)."""
    cpu_bandwidth_bytes_per_s: float | None = None
    """Read bandwidth with `cpu_threads` threads (speed.measure_cpu); None: a typical guess."""
    cpu_flops: float | None = None
    """llama.cpp prompt FLOP/s on the CPU (CpuCalibration.prompt_flops()); None: a guess."""
    cpu_repack_types: frozenset[str] = DEFAULT_CPU_REPACK_TYPES
    name: str = "this machine"
    cpu_threads_batch: int | None = None
    """Threads prompt batches use; None: ``cpu_threads``."""
    cpu_rates: speed.CpuRates | None = None
    """This machine's calibrated per-thread CPU rates; None: the bandwidth/FLOPs guess above."""

    @property
    def batch_threads(self) -> int:
        return self.cpu_threads_batch or self.cpu_threads

    @classmethod
    def hypothetical(
        cls,
        *,
        ram_bytes: int,
        gpus: Sequence[tuple[str, int]] = (),
        cpu_threads: int = 8,
        cpu_bandwidth_bytes_per_s: float | None = None,
        name: str = "hypothetical machine",
    ) -> HardwareBudget:
        """A machine described by sizes alone (an upgrade, a cloud offer): all memory free.

        ``gpus`` is (name, VRAM bytes) per GPU; bandwidth and FLOPs come from the name table.
        """
        cards = tuple(
            GpuBudget(
                index=i,
                name=gname,
                total_bytes=vram,
                free_bytes=vram,
                bandwidth_bytes_per_s=speed.gpu_spec(gname)[0],
            )
            for i, (gname, vram) in enumerate(gpus)
        )
        return cls(
            gpus=cards,
            ram_total_bytes=ram_bytes,
            ram_available_bytes=ram_bytes,
            cpu_threads=cpu_threads,
            cpu_bandwidth_bytes_per_s=cpu_bandwidth_bytes_per_s,
            name=name,
        )


def default_threads(physical_cores: int | None = None) -> int:
    """llama.cpp's own default for generation: one thread per physical core.

    Decoding is bound by memory and by each core's dot products; a second thread on the same
    core (SMT) only competes for both. llama-cpp-python's "half the logical cores" rule agrees
    on desktops with SMT, and gives half the speed on VMs and cloud instances without it.
    """
    import psutil

    return max(1, physical_cores or psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def default_batch_threads(logical_cores: int | None = None) -> int:
    """Prompt batches are compute-bound matmuls: every logical core helps."""
    return max(1, logical_cores or os.cpu_count() or 1)


def budget_from_snapshot(
    snap: Snapshot,
    *,
    calibration: speed.CpuCalibration | None = None,
    threads: int | None = None,
    threads_batch: int | None = None,
    rates: speed.CpuRates | None = None,
) -> HardwareBudget:
    """This machine as the fit sees it: free VRAM per GPU, available RAM, CPU speed.

    ``threads`` (a user's choice) sets both thread counts unless ``threads_batch`` is given;
    without either, generation gets one per physical core and prompts every logical core.
    A GPU without a memory reading (lost, or NVML refused) is left out: a fit cannot place
    layers on memory it cannot see.
    """
    n_threads = threads or default_threads(snap.cpu.physical_cores)
    n_batch = threads_batch or threads or default_batch_threads(snap.cpu.logical_cores)
    if rates is not None and snap.cpu.logical_cores:
        # Per-thread rates travel; how many cores there are to run threads on is this reading's.
        physical = snap.cpu.physical_cores or snap.cpu.logical_cores
        rates = replace(rates, physical_cores=physical, logical_cores=snap.cpu.logical_cores)
    gpus = []
    for g in snap.gpus:
        if g.lost or g.memory_total is None or g.memory_free is None:
            continue
        bw, flops = speed.gpu_spec(g.name)
        gpus.append(
            GpuBudget(
                index=g.index,
                name=g.name,
                total_bytes=g.memory_total,
                free_bytes=g.memory_free,
                bandwidth_bytes_per_s=g.bandwidth_bytes_per_s or bw,
                flops=flops,
            )
        )
    return HardwareBudget(
        gpus=tuple(gpus),
        ram_total_bytes=snap.memory.total,
        ram_available_bytes=snap.memory.available,
        cpu_threads=n_threads,
        cpu_bandwidth_bytes_per_s=calibration.bandwidth(n_threads) if calibration else None,
        cpu_flops=calibration.prompt_flops() if calibration else None,
        name=snap.hostname or "this machine",
        cpu_threads_batch=n_batch,
        cpu_rates=rates,
    )


def with_sizes(
    base: HardwareBudget,
    *,
    vram: Sequence[int] | None = None,
    ram: int | None = None,
    gpu_name: str | None = None,
) -> HardwareBudget:
    """``base`` with its GPUs and/or RAM replaced by typed sizes (all of it free).

    ``vram=[]`` means no GPU; ``vram=None`` keeps this machine's GPUs. A replaced GPU keeps the
    name (and so the bandwidth) of the card it replaces unless ``gpu_name`` says otherwise.
    """
    budget = base
    if vram is not None:
        cards = []
        for i, size in enumerate(vram):
            name = gpu_name or (base.gpus[i].name if i < len(base.gpus) else "GPU")
            bw, flops = speed.gpu_spec(name)
            cards.append(
                GpuBudget(
                    index=i,
                    name=name,
                    total_bytes=size,
                    free_bytes=size,
                    bandwidth_bytes_per_s=bw,
                    flops=flops,
                )
            )
        budget = replace(budget, gpus=tuple(cards))
    if ram is not None:
        budget = replace(budget, ram_total_bytes=ram, ram_available_bytes=ram)
    if vram is not None or ram is not None:
        budget = replace(budget, name="hypothetical machine")
    return budget


def parse_vram_list(text: str) -> list[int]:
    """ "24G" or "24G,24G" (one size per GPU); "0" or "none" means no GPU."""
    if text.strip().lower() in {"0", "none", ""}:
        return []
    return [parse_size(part) for part in text.split(",")]


def machine_budget(
    snap: Snapshot,
    *,
    calibration: speed.CpuCalibration | None = None,
    threads: int | None = None,
    threads_batch: int | None = None,
    rates: speed.CpuRates | None = None,
    vram: Sequence[int] | None = None,
    ram: int | None = None,
    gpu_name: str | None = None,
) -> HardwareBudget:
    """This machine from one reading, with any typed sizes laid over it (``with_sizes``).

    The one budget every face fits against: `rigdeck fit`, `run`, `serve`, `bench`, the models
    pane and the chat pane, so the same reading and the same flags give the same placement.
    """
    base = budget_from_snapshot(
        snap, calibration=calibration, threads=threads, threads_batch=threads_batch, rates=rates
    )
    return with_sizes(base, vram=vram, ram=ram, gpu_name=gpu_name)


def budget_from_offer(
    gpu_name: str,
    num_gpus: int,
    gpu_ram_bytes: int,
    cpu_ram_bytes: int,
    cpu_threads: int,
    *,
    gpu_bandwidth_bytes_per_s: float | None = None,
    cpu_bandwidth_bytes_per_s: float | None = None,
    cpu_flops: float | None = None,
    name: str = "cloud offer",
) -> HardwareBudget:
    """A rented machine as the fit sees it, from an offer's plain figures (all memory free).

    ``gpu_ram_bytes`` is per GPU; ``cpu_threads`` the threads generation will use. GPU bandwidth
    and FLOPs come from the name table unless the offer measured the bandwidth; without a CPU
    bandwidth the fit assumes a typical server CPU.
    """
    if num_gpus < 0 or gpu_ram_bytes < 0 or cpu_ram_bytes <= 0 or cpu_threads < 1:
        raise FitError(
            f"an offer needs 0 or more GPUs, RAM and at least one thread, not {num_gpus} GPUs, "
            f"{cpu_ram_bytes} bytes of RAM, {cpu_threads} threads"
        )
    bw, flops = speed.gpu_spec(gpu_name)
    cards = tuple(
        GpuBudget(
            index=i,
            name=gpu_name,
            total_bytes=gpu_ram_bytes,
            free_bytes=gpu_ram_bytes,
            bandwidth_bytes_per_s=gpu_bandwidth_bytes_per_s or bw,
            flops=flops,
        )
        for i in range(num_gpus if gpu_ram_bytes else 0)
    )
    return HardwareBudget(
        gpus=cards,
        ram_total_bytes=cpu_ram_bytes,
        ram_available_bytes=cpu_ram_bytes,
        cpu_threads=cpu_threads,
        cpu_bandwidth_bytes_per_s=cpu_bandwidth_bytes_per_s,
        cpu_flops=cpu_flops,
        name=name,
    )
