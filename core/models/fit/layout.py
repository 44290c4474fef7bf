"""llama.cpp's memory layout predicted from a header: devices, buffers, speeds, search."""

from __future__ import annotations

import bisect
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from rigdeck.core.errors import FitError
from rigdeck.core.models.fit import speed
from rigdeck.core.models.fit.budget import GpuBudget, HardwareBudget
from rigdeck.core.models.fit.placement import DevicePlacement, Placement
from rigdeck.core.models.fit.settings import KV_TYPES, KvType, RunSettings, quantized
from rigdeck.core.models.fit.why import notes, why
from rigdeck.core.models.format.model_info import LayerWeights, ModelInfo

MiB = 1 << 20
GiB = 1 << 30


# What one CUDA device costs before any buffer: context, cuBLAS workspace, kernel images.
# Measured at 530-560 MiB on an H100 with CUDA 13; older drivers and smaller cards use less.
CUDA_CONTEXT_BYTES = 560 * MiB
# Resident memory of the process itself (interpreter, libraries) besides llama.cpp's buffers.
HOST_RUNTIME_BYTES = 100 * MiB
HOST_RUNTIME_CUDA_BYTES = 350 * MiB


_F = 4  # compute buffers hold float32 activations


# --------------------------------------------------------------------------------------------
# Settings as llama.cpp resolves them


@dataclass(frozen=True)
class ResolvedRun:
    settings: RunSettings
    n_ctx: int
    n_ctx_seq: int
    n_stream: int
    n_ubatch: int
    flash_attn: bool
    swa_cells: int
    """Cells per stream of a sliding-window layer's cache."""
    n_outputs: int


def _pad(x: int, n: int) -> int:
    return (x + n - 1) // n * n


def resolve_run(model: ModelInfo, s: RunSettings) -> ResolvedRun:
    n_ctx = s.n_ctx or model.n_ctx_train or 4096
    n_ctx = _pad(n_ctx, 256)
    if s.kv_unified:
        n_ctx_seq, n_stream = n_ctx, 1
    else:
        n_ctx_seq = _pad(n_ctx // s.n_seq, 256)
        n_ctx, n_stream = n_ctx_seq * s.n_seq, s.n_seq
    n_batch = min(n_ctx, s.n_batch)
    n_ubatch = min(n_batch, s.n_ubatch)
    # 'auto' enables flash attention on the backends this plans for (CPU, CUDA); a quantized
    # V cache, and a quantized latent cache for MLA, need it.
    fa = True if s.flash_attn is None else s.flash_attn
    if not fa and model.is_mla and quantized(s.type_k):
        raise FitError("a quantized K cache for an MLA model needs flash attention")
    for kv_type in {s.type_k, s.type_v}:
        block = KV_TYPES[kv_type][0]
        widths = [w for i in range(model.n_layer) for w in model.kv_width(i) if w]
        if any(w % block for w in widths):
            raise FitError(f"{kv_type} KV cache needs head widths divisible by {block}")
    swa = n_ctx_seq
    if model.has_swa and not s.swa_full:
        window = model.sliding_window * (s.n_seq if s.kv_unified else 1)
        swa = _pad(min(n_ctx_seq, window + n_ubatch), 256)
    return ResolvedRun(
        settings=s,
        n_ctx=n_ctx,
        n_ctx_seq=n_ctx_seq,
        n_stream=n_stream,
        n_ubatch=n_ubatch,
        flash_attn=fa,
        swa_cells=swa,
        n_outputs=min(n_ubatch, n_batch),
    )


def _row(kv_type: KvType, n: int) -> int:
    block, size = KV_TYPES[kv_type]
    return n // block * size


def _kv_layer_bytes(model: ModelInfo, run: ResolvedRun, il: int) -> int:
    """K + V cache bytes of one block, as llama_kv_cache allocates them."""
    k_width, v_width = model.kv_width(il)
    if k_width == 0:
        return 0
    cells = run.swa_cells if model.has_swa and model.swa_layers[il] else run.n_ctx_seq
    # Without flash attention V is stored transposed and padded to the widest layer.
    if v_width and not run.flash_attn:
        v_width = model.max_v_width
    per_cell = _row(run.settings.type_k, k_width) + (
        _row(run.settings.type_v, v_width) if v_width else 0
    )
    return per_cell * cells * run.n_stream


# --------------------------------------------------------------------------------------------
# Layout: which device holds what


def _f32(x: float) -> float:
    """Round like C's float, as llama.cpp computes its split points."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def _assign(
    n_blocks: int, n_gpu_layers: int, splits: Sequence[float], n_gpus: int
) -> list[int | None]:
    """Device index (None = CPU) of each block and, last, of the output: llama.cpp's rule."""
    if n_gpus == 0:
        return [None] * (n_blocks + 1)
    i_gpu_start = max(n_blocks + 1 - n_gpu_layers, 0)
    act = min(n_gpu_layers, n_blocks + 1)
    out: list[int | None] = []
    for il in range(n_blocks + 1):
        if il < i_gpu_start or il - i_gpu_start >= act:
            out.append(None)
            continue
        pos = _f32(_f32(il - i_gpu_start) / act)
        out.append(min(bisect.bisect_right(splits, pos), n_gpus - 1))
    return out


def gpu_splits(model: ModelInfo, budget: HardwareBudget, run: ResolvedRun) -> list[float]:
    """Cumulative split points: proportional to what each GPU can hold after fixed costs."""
    if len(budget.gpus) <= 1:
        return [1.0] * len(budget.gpus)
    usable = [
        max(g.free_bytes - run.settings.gpu_margin_bytes - CUDA_CONTEXT_BYTES, 1)
        for g in budget.gpus
    ]
    total = float(sum(usable))
    acc, out = 0.0, []
    for u in usable:
        acc += u
        out.append(_f32(_f32(acc) / _f32(total)))
    return out


def _tensor_split(splits: Sequence[float]) -> tuple[float, ...]:
    if len(splits) <= 1:
        return ()
    prev, out = 0.0, []
    for s in splits:
        out.append(round(s - prev, 4))
        prev = s
    return tuple(out)


@dataclass
class _Acc:
    weights: int = 0
    kv: int = 0
    layers: int = 0
    moe_layers: int = 0
    decode_bytes: float = 0.0
    flops: float = 0.0
    has_output: bool = False


def lay_out(
    model: ModelInfo,
    budget: HardwareBudget,
    run: ResolvedRun,
    n_gpu_layers: int,
    n_cpu_moe: int,
    splits: Sequence[float],
) -> Placement:
    s = run.settings
    gpus = budget.gpus
    n_blocks = model.n_layer + model.n_layer_skipped
    n_gpu_layers = max(0, min(n_gpu_layers, n_blocks + 1))
    n_cpu_moe = max(0, min(n_cpu_moe, model.n_layer))
    where = _assign(n_blocks, n_gpu_layers, splits, len(gpus))
    gpu_acc = [_Acc() for _ in gpus]
    cpu = _Acc()
    bytes_per_param = model.tensor_bytes / model.n_params if model.n_params else 1.0
    used_frac = model.n_expert_used / model.n_expert if model.n_expert else 1.0
    cpu_blocks_kv = 0
    cpu_matrices: list[int] = []

    for il, layer in enumerate(model.layers):
        dev = where[il]
        acc = cpu if dev is None else gpu_acc[dev]
        acc.layers += 1
        dense = layer.attention_bytes + layer.ffn_bytes
        experts_on_cpu = il < n_cpu_moe and dev is not None
        if dev is None:
            acc.weights += layer.total_bytes
            cpu_matrices.append(layer.largest_matrix_bytes + layer.second_matrix_bytes)
        else:
            acc.weights += dense + layer.cuda_pad_bytes
            if experts_on_cpu:
                cpu.weights += layer.expert_bytes
                cpu_matrices.append(_largest_expert(layer))
            else:
                acc.weights += layer.expert_bytes + layer.expert_cuda_pad_bytes
        if layer.expert_bytes and not experts_on_cpu:
            acc.moe_layers += 1
        kv = _kv_layer_bytes(model, run, il)
        if s.offload_kqv or dev is None:
            acc.kv += kv
        else:
            cpu.kv += kv
        if dev is None and kv:
            cpu_blocks_kv = max(cpu_blocks_kv, kv)
        # What one generated token reads: dense weights, the experts it is routed to.
        acc.decode_bytes += dense
        active_experts = layer.expert_bytes * used_frac
        if experts_on_cpu:
            cpu.decode_bytes += active_experts / speed.CPU_MOE_EFFICIENCY
        elif dev is None and layer.expert_bytes:
            acc.decode_bytes += active_experts / speed.CPU_MOE_EFFICIENCY
        else:
            acc.decode_bytes += active_experts
        # Prompt FLOPs, inflated where kernels run far below the dense rate.
        prompt_cost = 2 * (dense + active_experts) / bytes_per_param
        if layer.expert_bytes:
            prompt_cost /= speed.MOE_PROMPT_EFFICIENCY
        if model.is_mla:
            prompt_cost /= speed.MLA_PROMPT_EFFICIENCY
        acc.flops += prompt_cost

    # token_embd always stays on the CPU: offloading the input layer gains nothing.
    cpu.weights += model.token_embd_bytes + model.input_extra_bytes
    out_dev = where[n_blocks]
    out_acc = cpu if out_dev is None else gpu_acc[out_dev]
    out_acc.has_output = True
    out_bytes = model.output_bytes + model.output_extra_bytes
    if out_dev is not None:
        out_acc.weights += out_bytes + model.output_cuda_pad_bytes
    elif not model.output_tied:
        out_acc.weights += out_bytes
    else:
        out_acc.weights += model.output_extra_bytes
        # Tied output on the CPU shares token_embd unless the two land in different CPU buffer
        # types: a repackable type is repacked for the matmul but not for the row lookup.
        if not gpus and model.output_type.upper() in budget.cpu_repack_types:
            out_acc.weights += model.output_bytes
    out_acc.decode_bytes += out_bytes
    out_acc.flops += 2 * model.output_bytes / bytes_per_param

    host_compute, gpu_compute = _compute(
        model, budget, run, where, gpu_acc, cpu_blocks_kv, cpu_matrices, n_cpu_moe
    )
    devices: list[DevicePlacement] = []
    for i, (g, acc) in enumerate(zip(gpus, gpu_acc, strict=True)):
        other = CUDA_CONTEXT_BYTES
        total = acc.weights + acc.kv + gpu_compute[i] + other
        devices.append(
            DevicePlacement(
                "gpu",
                g.name,
                g.free_bytes,
                acc.weights,
                acc.kv,
                gpu_compute[i],
                other,
                total,
                acc.layers,
                g.index,
                acc.has_output,
            )
        )
    output_buffer = model.n_vocab * 4 * s.n_seq
    host_other = output_buffer + (HOST_RUNTIME_CUDA_BYTES if gpus else HOST_RUNTIME_BYTES)
    host_total = cpu.weights + cpu.kv + host_compute + host_other
    devices.append(
        DevicePlacement(
            "cpu",
            "CPU",
            budget.ram_available_bytes,
            cpu.weights,
            cpu.kv,
            host_compute,
            host_other,
            host_total,
            cpu.layers,
            None,
            cpu.has_output,
        )
    )

    prompt, decode = _speeds(model, budget, run, gpu_acc, cpu, n_cpu_moe, where)
    fits_gpu = all(
        d.total_bytes + s.gpu_margin_bytes <= d.budget_bytes for d in devices if d.kind == "gpu"
    )
    fits_host = host_total + s.ram_margin_bytes <= budget.ram_available_bytes
    fits = fits_gpu and fits_host
    all_gpu = bool(gpus) and n_gpu_layers >= n_blocks + 1 and n_cpu_moe == 0
    any_gpu = bool(gpus) and n_gpu_layers > 0
    verdict: Literal["gpu", "partial", "cpu", "none"] = (
        "none" if not fits else "gpu" if all_gpu else "partial" if any_gpu else "cpu"
    )
    # The threads the speed was predicted with travel along, so every plan loads with them.
    resolved = replace(
        s,
        n_ctx=run.n_ctx,
        flash_attn=run.flash_attn,
        gpu_layers=n_gpu_layers,
        cpu_moe=n_cpu_moe,
        n_threads=s.n_threads or budget.cpu_threads,
        n_threads_batch=s.n_threads_batch or s.n_threads or budget.batch_threads,
    )
    placement = Placement(
        fits=fits,
        verdict=verdict,
        gpu_layers=n_gpu_layers,
        total_layers=n_blocks + 1,
        devices=tuple(devices),
        prompt_tps=prompt,
        decode_tps=decode,
        why="",
        suggestions=(),
        margin_bytes=s.gpu_margin_bytes,
        notes=(),
        n_cpu_moe=n_cpu_moe,
        tensor_split=_tensor_split(splits),
        settings=resolved,
    )
    return replace(
        placement, why=why(model, budget, placement), notes=notes(model, budget, run, placement)
    )


def _largest_expert(layer: LayerWeights) -> int:
    return min(layer.largest_matrix_bytes, layer.expert_bytes)


# --------------------------------------------------------------------------------------------
# Compute buffers: the peak of the graph's dominant phases, per device


def _compute(
    model: ModelInfo,
    budget: HardwareBudget,
    run: ResolvedRun,
    where: Sequence[int | None],
    gpu_acc: Sequence[_Acc],
    cpu_kv_layer: int,
    cpu_matrices: Sequence[int],
    n_cpu_moe: int,
) -> tuple[int, list[int]]:
    """(host compute bytes, compute bytes per GPU) for one micro-batch of n_ubatch tokens.

    ggml's allocator reuses memory as tensors die, so a buffer is about the largest set of
    tensors alive at once: the attention scores (without flash attention), the logits, or, when
    a GPU runs a CPU-resident block's matmuls for a prompt, copies of that block's weights.
    """
    tok = run.n_ubatch
    f = tok * _F
    e = model.n_embd
    if model.is_mla:
        e_q = model.n_head * (model.kv_lora_rank + model.rope_dim)
    else:
        e_q = model.n_head * model.head_dim_k
    e_kv = max((model.kv_width(i)[0] for i in range(model.n_layer)), default=0)
    e_v = max((model.kv_width(i)[1] for i in range(model.n_layer)), default=0)
    cells = [run.n_ctx]
    if model.has_swa:
        cells.append(run.swa_cells * run.n_stream)
    n_kv = run.n_ctx
    mask = sum(c * tok * (2 if run.flash_attn else 4) for c in cells)
    kq = 0 if run.flash_attn else model.n_head * n_kv * tok * 4
    logits = model.n_vocab * run.n_outputs * _F
    mla_extra = 2 * e_q * f if model.is_mla else 0
    moe_extra = (3 * e * max(model.n_expert_used, 1) * f // 2) if model.is_moe else 0

    if not budget.gpus:
        b = 4 if model.is_mla else 2
        attn = kq + mask + (3 * e + b * e_q + 2 * e_kv) * f
        out = logits + 2 * e * f
        ffn = (3 * model.n_ff + 2 * e) * f
        return max(attn, out, ffn) + (mla_extra if model.is_mla else 0), []

    s = run.settings
    host = mask + 2 * e * f + (0 if run.flash_attn else 2 * e_kv * f)
    fa_convert = (
        n_kv * (e_kv + e_v) * 2
        if run.flash_attn and (quantized(s.type_k) or quantized(s.type_v))
        else 0
    )
    attn = kq + mask + (3 * e + e_q + 2 * e_kv) * f + fa_convert
    out = logits + e * f
    out_dev = where[-1]
    cpu_blocks = any(d is None for d in where[: model.n_layer])
    ffa = max(model.n_ff, model.n_ff_expert * max(model.n_expert_used, 1))
    result = []
    for i, acc in enumerate(gpu_acc):
        phases = [0]
        if acc.layers:
            phases.append(attn + (moe_extra if acc.moe_layers else 0) + mla_extra)
        if out_dev == i:
            phases.append(out + (moe_extra if acc.moe_layers else 0) + mla_extra)
        # The first GPU runs prompt matmuls of CPU-resident weights (llama.cpp's op offload).
        if i == 0 and s.op_offload:
            if cpu_blocks:
                staged = _block_kv_staging(cpu_kv_layer)
                phases.append(attn + staged + mla_extra)
            if out_dev is None:
                phases.append(out + model.output_bytes + model.output_cuda_pad_bytes)
            if cpu_blocks or n_cpu_moe:
                # Two weights of one block can be staged at once (e.g. gate and up).
                phases.append(max(cpu_matrices, default=0) + (3 * ffa + 2 * e) * f + mla_extra)
        result.append(max(phases))
    return host, result


def _block_kv_staging(kv_bytes: int) -> int:
    """A CPU block's K and V copied to the GPU for its prompt attention (with some reshaping)."""
    return kv_bytes * 3 // 2


# --------------------------------------------------------------------------------------------
# Speed


def _gpu_rates(g: GpuBudget) -> tuple[float, float]:
    bw, flops = speed.gpu_spec(g.name)
    bandwidth = g.bandwidth_bytes_per_s or bw or speed.DEFAULT_GPU_BW
    peak = g.flops or flops or speed.DEFAULT_GPU_FLOPS
    return bandwidth, peak * speed.GPU_PROMPT_EFFICIENCY


def cpu_work(model: ModelInfo) -> tuple[float, int, float]:
    """(bytes read per decoded token, blocks, FLOPs per prompt token) of a model all on the CPU.

    The same counts ``lay_out`` makes per device, for calibrating against a measured run.
    """
    bytes_per_param = model.tensor_bytes / model.n_params if model.n_params else 1.0
    used_frac = model.n_expert_used / model.n_expert if model.n_expert else 1.0
    decode = 0.0
    flops = 0.0
    for layer in model.layers:
        dense = layer.attention_bytes + layer.ffn_bytes
        active = layer.expert_bytes * used_frac
        decode += dense + (active / speed.CPU_MOE_EFFICIENCY if layer.expert_bytes else 0.0)
        cost = 2 * (dense + active) / bytes_per_param
        if layer.expert_bytes:
            cost /= speed.MOE_PROMPT_EFFICIENCY
        if model.is_mla:
            cost /= speed.MLA_PROMPT_EFFICIENCY
        flops += cost
    decode += model.output_bytes + model.output_extra_bytes
    flops += 2 * model.output_bytes / bytes_per_param
    return decode, len(model.layers), flops


def repacked_on_cpu(model: ModelInfo, repack_types: frozenset[str]) -> bool:
    """Whether the model's main weight type (Q4_K of a Q4_K_M) is one llama.cpp repacks."""
    quant = model.quant.upper()
    return any(quant == t or quant.startswith(t + "_") for t in repack_types)


def _speeds(
    model: ModelInfo,
    budget: HardwareBudget,
    run: ResolvedRun,
    gpu_acc: Sequence[_Acc],
    cpu: _Acc,
    n_cpu_moe: int,
    where: Sequence[int | None],
) -> tuple[float, float]:
    threads = run.settings.n_threads or budget.cpu_threads
    threads_batch = run.settings.n_threads_batch or run.settings.n_threads or budget.batch_threads
    cpu_bw = budget.cpu_bandwidth_bytes_per_s or speed.DEFAULT_CPU_BW
    cpu_flops = budget.cpu_flops or speed.cpu_prompt_flops(threads, None)
    works = []
    mla = speed.GPU_MLA_LAYER_OVERHEAD_S if model.is_mla else 0.0
    for g, acc in zip(budget.gpus, gpu_acc, strict=True):
        bw, flops = _gpu_rates(g)
        works.append(
            speed.DeviceWork(
                "gpu",
                acc.decode_bytes,
                acc.flops,
                acc.layers,
                bw,
                flops,
                extra_decode_s=acc.layers * mla,
            )
        )
    cpu_work = speed.DeviceWork(
        "cpu",
        cpu.decode_bytes,
        cpu.flops,
        cpu.layers,
        cpu_bw,
        cpu_flops,
        threads,
        efficiency=speed.cpu_row_efficiency(model.n_embd),
        rates=budget.cpu_rates,
        threads_batch=threads_batch,
        repacked=repacked_on_cpu(model, budget.cpu_repack_types),
    )
    decode = speed.decode_tps([*works, cpu_work])
    pcie = 0.0
    if budget.gpus and run.settings.op_offload and (cpu.layers or n_cpu_moe or where[-1] is None):
        # Prompts run on the GPU; CPU-resident weights cross PCIe once per micro-batch.
        experts = sum(x.expert_bytes for x in model.layers[:n_cpu_moe])
        moved = cpu.weights - model.token_embd_bytes - model.input_extra_bytes - experts
        pcie = (moved + experts * speed.PCIE_EXPERT_FRACTION) / run.n_ubatch
        works[0] = replace(works[0], prompt_flops=works[0].prompt_flops + cpu.flops)
        cpu_work = replace(cpu_work, prompt_flops=0.0)
    prompt = speed.prompt_tps([*works, cpu_work], pcie_bytes_per_token=pcie)
    return prompt, decode


# --------------------------------------------------------------------------------------------
# Search


def search(
    model: ModelInfo, budget: HardwareBudget, run: ResolvedRun, settings: RunSettings
) -> Placement:
    splits = gpu_splits(model, budget, run)
    n_max = model.n_layer + model.n_layer_skipped + 1
    if not budget.gpus:
        return lay_out(model, budget, run, 0, 0, splits)
    if settings.gpu_layers is not None:
        ngl = min(settings.gpu_layers, n_max)
        if settings.cpu_moe is not None or not model.is_moe:
            return lay_out(model, budget, run, ngl, settings.cpu_moe or 0, splits)
        return _min_cpu_moe(model, budget, run, ngl, splits) or lay_out(
            model, budget, run, ngl, model.n_layer, splits
        )

    fixed_moe = settings.cpu_moe if settings.cpu_moe is not None else 0
    dense = None
    for ngl in range(n_max, -1, -1):
        p = lay_out(model, budget, run, ngl, fixed_moe, splits)
        if p.fits:
            dense = p
            break
    candidates = [dense] if dense is not None else []
    if model.is_moe and settings.cpu_moe is None and (dense is None or dense.verdict != "gpu"):
        moe = _min_cpu_moe(model, budget, run, n_max, splits)
        if moe is not None:
            candidates.append(moe)
    if candidates:
        return max(candidates, key=lambda p: (p.decode_tps, p.gpu_layers))
    # Nothing fits: show the plan that asks least of the host (everything the GPUs can take).
    return lay_out(model, budget, run, n_max if _gpu_room(budget) else 0, fixed_moe, splits)


def _gpu_room(budget: HardwareBudget) -> bool:
    return any(g.free_bytes > CUDA_CONTEXT_BYTES for g in budget.gpus)


def _min_cpu_moe(
    model: ModelInfo, budget: HardwareBudget, run: ResolvedRun, ngl: int, splits: Sequence[float]
) -> Placement | None:
    """All blocks on the GPU, the fewest blocks' experts on the CPU that make it fit."""
    lo, hi = 0, model.n_layer
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        p = lay_out(model, budget, run, ngl, mid, splits)
        if p.fits:
            best, hi = p, mid - 1
        else:
            lo = mid + 1
    return best
