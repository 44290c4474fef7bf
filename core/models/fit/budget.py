"""What a fit may use, and where that comes from: this machine's latest Snapshot, sizes a user
typed, or a cloud offer."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rigdeck.core.errors import FitError
from rigdeck.core.models.fit import speed
from rigdeck.core.telemetry.snapshot import Snapshot

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
    cpu_bandwidth_bytes_per_s: float | None = None
    """Read bandwidth with `cpu_threads` threads (speed.measure_cpu); None: a typical guess."""
    cpu_flops: float | None = None
    """llama.cpp prompt FLOP/s on the CPU (CpuCalibration.prompt_flops()); None: a guess."""
    cpu_repack_types: frozenset[str] = DEFAULT_CPU_REPACK_TYPES
    name: str = "this machine"

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


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from "24G", "24GB", "24GiB", "512M", "1.5T" or a plain byte count.

    Memory sizes are binary: a "24 GB" card has 24 GiB, and that is what users type.
    """
    m = _SIZE_RE.match(text)
    if m is None:
        raise FitError(f"{text!r} is not a size; write it like 24G, 512M or 1.5T")
    value = float(m[1]) * _SCALE[m[2].lower()]
    if value <= 0:
        raise FitError(f"{text!r}: a size must be more than zero")
    return int(value)


def default_threads(logical_cores: int | None = None) -> int:
    """llama-cpp-python's own default: half the logical cores (one per physical core, mostly)."""
    return max(1, (logical_cores or os.cpu_count() or 2) // 2)


def budget_from_snapshot(
    snap: Snapshot,
    *,
    calibration: speed.CpuCalibration | None = None,
    threads: int | None = None,
) -> HardwareBudget:
    """This machine as the fit sees it: free VRAM per GPU, available RAM, CPU speed.

    A GPU without a memory reading (lost, or NVML refused) is left out: a fit cannot place
    layers on memory it cannot see.
    """
    n_threads = threads or default_threads(snap.cpu.logical_cores)
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
