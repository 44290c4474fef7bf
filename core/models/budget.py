"""Where a fit's HardwareBudget comes from: this machine's latest Snapshot, or sizes a user typed.

Also the one bridge from a fit's Placement to the runner's RunPlan, so the models pane, the chat
pane and the CLI all load a model exactly the way the fit placed it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rigdeck.core.errors import FitError
from rigdeck.core.models import speed
from rigdeck.core.models.fit import GpuBudget, HardwareBudget, Placement
from rigdeck.core.models.runner import RunPlan
from rigdeck.core.telemetry.snapshot import Snapshot

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


def plan_from_placement(
    model_path: str | os.PathLike[str], placement: Placement, *, threads: int | None = None
) -> RunPlan:
    """The runner's plan for exactly what the fit placed, carrying its predictions along."""
    s = placement.settings
    gpu_layers = placement.gpu_layers
    if placement.total_layers and gpu_layers >= placement.total_layers:
        gpu_layers = -1
    # None is llama.cpp's "auto", which the fit resolves to on for CPU and CUDA.
    flash = True if s.flash_attn is None else s.flash_attn
    return RunPlan(
        model_path=str(Path(model_path)),
        gpu_layers=gpu_layers,
        n_ctx=s.n_ctx,
        type_k=s.type_k,  # type: ignore[arg-type]
        type_v=s.type_v,  # type: ignore[arg-type]
        flash_attn=flash,
        n_threads=threads or s.n_threads,
        n_batch=s.n_batch,
        n_ubatch=s.n_ubatch,
        n_cpu_moe=placement.n_cpu_moe,
        tensor_split=placement.tensor_split,
        swa_full=s.swa_full,
        predicted_vram_bytes=placement.gpu_bytes or None,
        predicted_ram_bytes=placement.host_bytes,
        predicted_prompt_tps=placement.prompt_tps or None,
        predicted_decode_tps=placement.decode_tps or None,
    )
