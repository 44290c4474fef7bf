"""Why a placement is what it is, and the caveats worth knowing, in one sentence each."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rigdeck.core.models.fit.layout import ResolvedRun


from rigdeck.core.models.fit.budget import HardwareBudget
from rigdeck.core.models.fit.placement import Placement, Shortfall
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.units import format_bytes


def gib(n: float) -> str:
    return format_bytes(int(n))


def shortfall_line(f: Shortfall) -> str:
    """``GPU 0 (RTX 3080) needs 9.8 GiB + 512.0 MiB margin, has 8.4 GiB free (1.9 GiB short)``."""
    d = f.device
    if d.kind == "gpu":
        return (
            f"GPU {d.index} ({d.name}) needs {gib(d.total_bytes)} + "
            f"{gib(f.margin_bytes)} margin, has {gib(d.budget_bytes)} free "
            f"({gib(f.short_bytes)} short)"
        )
    return (
        f"RAM: the CPU part needs {gib(d.total_bytes)} + "
        f"{gib(f.margin_bytes)} margin, {gib(d.budget_bytes)} available "
        f"({gib(f.short_bytes)} short)"
    )


def why(model: ModelInfo, budget: HardwareBudget, p: Placement) -> str:
    host = next(d for d in p.devices if d.kind == "cpu")
    gpus = [d for d in p.devices if d.kind == "gpu"]
    blocks = p.total_layers - 1
    if p.fits:
        if p.verdict == "gpu":
            where = ", ".join(
                f"GPU {d.index} ({d.name}) {gib(d.total_bytes)} of {gib(d.budget_bytes)} free"
                for d in gpus
            )
            return f"all {p.total_layers} layers on the GPU: {where}"
        if p.verdict == "cpu":
            why = f"runs on the CPU: {gib(host.total_bytes)} of {gib(host.budget_bytes)} RAM"
            return why + ("" if not gpus else "; no layer fits on the GPU next to its buffers")
        on_gpu = sum(d.layers for d in gpus)
        moe = f", experts of {p.n_cpu_moe} blocks on the CPU" if p.n_cpu_moe else ""
        return (
            f"{on_gpu} of {blocks} blocks on the GPU{moe}; the rest and "
            f"{gib(host.total_bytes)} in RAM ({gib(host.budget_bytes)} available)"
        )
    short = [shortfall_line(f) for f in p.shortfalls]
    return "does not fit: " + "; ".join(short) if short else "does not fit"


def notes(
    model: ModelInfo, budget: HardwareBudget, run: ResolvedRun, p: Placement
) -> tuple[str, ...]:
    s = run.settings
    notes = []
    host = next(d for d in p.devices if d.kind == "cpu")
    if s.flash_attn is None:
        notes.append("flash attention assumed on (llama.cpp 'auto' enables it on CPU and CUDA)")
    if model.has_swa and not s.swa_full:
        notes.append(
            f"sliding-window layers keep {run.swa_cells} cells, not {run.n_ctx_seq} "
            "(pass swa_full=False; llama-cpp-python defaults to a full-size cache)"
        )
    if s.n_ctx and model.n_ctx_train and s.n_ctx > model.n_ctx_train:
        notes.append(
            f"context {s.n_ctx} is longer than the {model.n_ctx_train} tokens the "
            "model was trained on"
        )
    if s.use_mmap and host.weights_bytes:
        notes.append(
            "top may show a far larger RSS during and after loading: with mmap the weights "
            "llama.cpp reads are page cache counted in RSS until the kernel reclaims them, "
            "and offloaded layers are read once on their way to the GPU; that memory is "
            "reclaimable and only matters when the machine is short of RAM"
        )
    repacked = model.token_embd_type.upper() in budget.cpu_repack_types or any(
        t in budget.cpu_repack_types for t in (model.quant.split("_")[0] + "_K", model.quant)
    )
    if host.weights_bytes and repacked and not budget.gpus:
        notes.append(
            "weights of repackable types are copied into llama.cpp's CPU layout at "
            "load, so they are anonymous memory rather than page cache (with mmap "
            "the file pages are read once more while repacking)"
        )
    if model.n_layer_skipped:
        notes.append(
            f"{model.n_layer_skipped} MTP block(s) ({gib(model.skipped_bytes)}) are "
            "in the file but not loaded"
        )
    if budget.gpus and p.gpu_layers == 0 and s.op_offload:
        notes.append(
            "with CUDA present llama.cpp still runs prompt matmuls on GPU 0, so it "
            "needs the CUDA context and a compute buffer there"
        )
    return tuple(notes)
