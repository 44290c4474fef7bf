"""Will this model run here, and how: llama.cpp's memory layout predicted from a GGUF header.

`fit(model, budget, settings)` is pure. It lays the model out the way llama.cpp does (which block
goes to which device, where token_embd and the output projection live, where each layer's KV
cache lives), sizes every buffer llama.cpp will allocate (weights exactly, KV exactly, compute
buffers from the graph's dominant phases), picks the largest GPU layer count (and, for MoE
models, how many blocks keep their experts on the CPU) that leaves a stated margin on every
device, and predicts tokens/s from the bytes each device reads. When nothing fits it says which
device is short by how much and which cheap changes would make it fit.

Terms: ``gpu_layers`` is llama.cpp's ``n_gpu_layers`` — repeating blocks plus one for the output
projection — so ``total_layers`` is blocks + 1 and a run with every block but not the output on
the GPU has ``gpu_layers == total_layers - 1``.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from rigdeck.core.errors import FitError
from rigdeck.core.models import speed
from rigdeck.core.models.model_info import LayerWeights, ModelInfo
from rigdeck.core.units import format_bytes

MiB = 1 << 20
GiB = 1 << 30

# (block size, bytes per block) of the cache types llama.cpp accepts for K and V.
KV_TYPES: Mapping[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
    "iq4_nl": (32, 18),
}
# What one CUDA device costs before any buffer: context, cuBLAS workspace, kernel images.
# Measured at 530-560 MiB on an H100 with CUDA 13; older drivers and smaller cards use less.
CUDA_CONTEXT_BYTES = 560 * MiB
# Resident memory of the process itself (interpreter, libraries) besides llama.cpp's buffers.
HOST_RUNTIME_BYTES = 100 * MiB
HOST_RUNTIME_CUDA_BYTES = 350 * MiB
# llama.cpp repacks these weight types for faster CPU matmuls (x86 AVX2 / Arm dot-product).
DEFAULT_CPU_REPACK_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"})
# Bits per weight of whole quantized models, for "smaller quant" suggestions.
QUANT_LADDER: tuple[tuple[str, float], ...] = (
    ("Q8_0", 8.5),
    ("Q6_K", 6.56),
    ("Q5_K_M", 5.69),
    ("Q4_K_M", 4.89),
    ("IQ4_XS", 4.46),
    ("Q3_K_M", 3.91),
    ("IQ3_XXS", 3.21),
    ("Q2_K", 2.96),
    ("IQ2_XXS", 2.2),
)
_F = 4  # compute buffers hold float32 activations


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class RunSettings:
    """How the model will be run: what shapes its KV cache and compute buffers."""

    n_ctx: int = 4096
    """Context length in tokens (0: the model's training context). llama.cpp pads it to 256."""
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool | None = None
    """None: llama.cpp's 'auto', which enables it on CPU and CUDA."""
    n_batch: int = 2048
    n_ubatch: int = 512
    n_seq: int = 1
    cpu_moe: int | None = None
    """MoE: None lets the fit choose; N keeps the experts of the first N blocks on the CPU."""
    gpu_layers: int | None = None
    """None: as many as fit; N: force llama.cpp's n_gpu_layers (blocks + 1 for the output)."""
    swa_full: bool = False
    """Full-size cache for sliding-window layers (llama-cpp-python's default is True)."""
    kv_unified: bool = False
    offload_kqv: bool = True
    op_offload: bool = True
    use_mmap: bool = True
    n_threads: int | None = None
    """CPU threads for generation; None: the budget's thread count."""
    gpu_margin_bytes: int = 512 * MiB
    """Left free on each GPU for other programs and allocator slack."""
    ram_margin_bytes: int = 512 * MiB

    def __post_init__(self) -> None:
        for name in ("type_k", "type_v"):
            value = getattr(self, name)
            if value not in KV_TYPES:
                raise FitError(f"{name} {value!r} is not a KV cache type ({', '.join(KV_TYPES)})")
        if self.n_ctx < 0:
            raise FitError(f"context length must be positive, not {self.n_ctx}")
        for name in ("n_batch", "n_ubatch", "n_seq"):
            if getattr(self, name) < 1:
                raise FitError(f"{name} must be at least 1, not {getattr(self, name)}")
        if _quantized(self.type_v) and self.flash_attn is False:
            raise FitError(f"a {self.type_v} V cache needs flash attention; turn it on or use f16")
        if self.gpu_layers is not None and self.gpu_layers < 0:
            raise FitError(f"gpu_layers must be 0 or more, not {self.gpu_layers}")
        if self.cpu_moe is not None and self.cpu_moe < 0:
            raise FitError(f"cpu_moe must be 0 or more, not {self.cpu_moe}")


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


# --------------------------------------------------------------------------------------------
# Outputs


@dataclass(frozen=True)
class DevicePlacement:
    kind: Literal["gpu", "cpu"]
    name: str
    budget_bytes: int
    """What this device can give: free VRAM, or available RAM."""
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    other_bytes: int
    """GPU: CUDA context and libraries. CPU: logits buffer and the process itself."""
    total_bytes: int
    layers: int
    """Repeating blocks whose weights live here (for the CPU: blocks not offloaded)."""
    index: int | None = None
    has_output: bool = False

    @property
    def free_after_bytes(self) -> int:
        return self.budget_bytes - self.total_bytes


@dataclass(frozen=True)
class Suggestion:
    label: str
    kind: str
    """'flash_attn' | 'kv_cache' | 'context' | 'quant' | 'ram' | 'gpu'."""
    fits: bool
    verdict: str
    gpu_layers: int
    prompt_tps: float
    decode_tps: float
    settings: RunSettings | None = None
    """The changed settings, when the change is a setting."""


@dataclass(frozen=True)
class Placement:
    fits: bool
    verdict: Literal["gpu", "partial", "cpu", "none"]
    gpu_layers: int
    total_layers: int
    devices: tuple[DevicePlacement, ...]
    prompt_tps: float
    decode_tps: float
    why: str
    suggestions: tuple[Suggestion, ...]
    margin_bytes: int
    """The free memory each GPU keeps after the plan (RunSettings.gpu_margin_bytes)."""
    notes: tuple[str, ...]
    n_cpu_moe: int = 0
    """Blocks whose routed experts stay on the CPU (llama.cpp --n-cpu-moe)."""
    tensor_split: tuple[float, ...] = ()
    """Per-GPU layer proportions to pass to llama.cpp (empty for one GPU)."""
    settings: RunSettings = field(default_factory=RunSettings)
    """The settings resolved for this plan: context, flash attention, layer counts."""

    @property
    def gpu_bytes(self) -> int:
        return sum(d.total_bytes for d in self.devices if d.kind == "gpu")

    @property
    def host_bytes(self) -> int:
        return sum(d.total_bytes for d in self.devices if d.kind == "cpu")


# --------------------------------------------------------------------------------------------
# Public entry points


def fit(model: ModelInfo, budget: HardwareBudget, settings: RunSettings) -> Placement:
    """The best placement for this machine, with suggestions when it does not fit well."""
    run = _resolve(model, settings)
    best = _search(model, budget, run, settings)
    if best.verdict != "gpu" or not best.fits:
        best = replace(best, suggestions=_suggestions(model, budget, settings, best))
    return best


def place_layers(
    model: ModelInfo,
    budget: HardwareBudget,
    settings: RunSettings,
    gpu_layers: int,
    n_cpu_moe: int = 0,
) -> Placement:
    """The placement for a forced layer count (and experts-on-CPU count), fitting or not."""
    run = _resolve(model, settings)
    splits = _splits(model, budget, run)
    return _layout(model, budget, run, gpu_layers, n_cpu_moe, splits)


def placement_to_json(p: Placement) -> dict[str, object]:
    return {
        "fits": p.fits,
        "verdict": p.verdict,
        "gpu_layers": p.gpu_layers,
        "total_layers": p.total_layers,
        "devices": [
            {
                "kind": d.kind,
                "name": d.name,
                "budget_bytes": d.budget_bytes,
                "weights_bytes": d.weights_bytes,
                "kv_bytes": d.kv_bytes,
                "compute_bytes": d.compute_bytes,
                "other_bytes": d.other_bytes,
                "total_bytes": d.total_bytes,
            }
            for d in p.devices
        ],
        "predicted": {"prompt_tps": round(p.prompt_tps, 2), "decode_tps": round(p.decode_tps, 2)},
        "why": p.why,
        "suggestions": [
            {
                "label": s.label,
                "kind": s.kind,
                "fits": s.fits,
                "verdict": s.verdict,
                "gpu_layers": s.gpu_layers,
                "predicted": {
                    "prompt_tps": round(s.prompt_tps, 2),
                    "decode_tps": round(s.decode_tps, 2),
                },
            }
            for s in p.suggestions
        ],
    }


# --------------------------------------------------------------------------------------------
# Settings as llama.cpp resolves them


@dataclass(frozen=True)
class _Run:
    settings: RunSettings
    n_ctx: int
    n_ctx_seq: int
    n_stream: int
    n_ubatch: int
    flash_attn: bool
    swa_cells: int
    """Cells per stream of a sliding-window layer's cache."""
    n_outputs: int


def _quantized(kv_type: str) -> bool:
    return KV_TYPES[kv_type][0] > 1


def _pad(x: int, n: int) -> int:
    return (x + n - 1) // n * n


def _resolve(model: ModelInfo, s: RunSettings) -> _Run:
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
    if not fa and model.is_mla and _quantized(s.type_k):
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
    return _Run(
        settings=s,
        n_ctx=n_ctx,
        n_ctx_seq=n_ctx_seq,
        n_stream=n_stream,
        n_ubatch=n_ubatch,
        flash_attn=fa,
        swa_cells=swa,
        n_outputs=min(n_ubatch, n_batch),
    )


def _row(kv_type: str, n: int) -> int:
    block, size = KV_TYPES[kv_type]
    return n // block * size


def _kv_layer_bytes(model: ModelInfo, run: _Run, il: int) -> int:
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


def _splits(model: ModelInfo, budget: HardwareBudget, run: _Run) -> list[float]:
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


def _layout(
    model: ModelInfo,
    budget: HardwareBudget,
    run: _Run,
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
    resolved = replace(
        s, n_ctx=run.n_ctx, flash_attn=run.flash_attn, gpu_layers=n_gpu_layers, cpu_moe=n_cpu_moe
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
        placement, why=_why(model, budget, placement), notes=_notes(model, budget, run, placement)
    )


def _largest_expert(layer: LayerWeights) -> int:
    return min(layer.largest_matrix_bytes, layer.expert_bytes)


# --------------------------------------------------------------------------------------------
# Compute buffers: the peak of the graph's dominant phases, per device


def _compute(
    model: ModelInfo,
    budget: HardwareBudget,
    run: _Run,
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
        if run.flash_attn and (_quantized(s.type_k) or _quantized(s.type_v))
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


def _speeds(
    model: ModelInfo,
    budget: HardwareBudget,
    run: _Run,
    gpu_acc: Sequence[_Acc],
    cpu: _Acc,
    n_cpu_moe: int,
    where: Sequence[int | None],
) -> tuple[float, float]:
    threads = run.settings.n_threads or budget.cpu_threads
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


def _search(
    model: ModelInfo, budget: HardwareBudget, run: _Run, settings: RunSettings
) -> Placement:
    splits = _splits(model, budget, run)
    n_max = model.n_layer + model.n_layer_skipped + 1
    if not budget.gpus:
        return _layout(model, budget, run, 0, 0, splits)
    if settings.gpu_layers is not None:
        ngl = min(settings.gpu_layers, n_max)
        if settings.cpu_moe is not None or not model.is_moe:
            return _layout(model, budget, run, ngl, settings.cpu_moe or 0, splits)
        return _min_cpu_moe(model, budget, run, ngl, splits) or _layout(
            model, budget, run, ngl, model.n_layer, splits
        )

    fixed_moe = settings.cpu_moe if settings.cpu_moe is not None else 0
    dense = None
    for ngl in range(n_max, -1, -1):
        p = _layout(model, budget, run, ngl, fixed_moe, splits)
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
    return _layout(model, budget, run, n_max if _gpu_room(budget) else 0, fixed_moe, splits)


def _gpu_room(budget: HardwareBudget) -> bool:
    return any(g.free_bytes > CUDA_CONTEXT_BYTES for g in budget.gpus)


def _min_cpu_moe(
    model: ModelInfo, budget: HardwareBudget, run: _Run, ngl: int, splits: Sequence[float]
) -> Placement | None:
    """All blocks on the GPU, the fewest blocks' experts on the CPU that make it fit."""
    lo, hi = 0, model.n_layer
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        p = _layout(model, budget, run, ngl, mid, splits)
        if p.fits:
            best, hi = p, mid - 1
        else:
            lo = mid + 1
    return best


# --------------------------------------------------------------------------------------------
# Explanations


def _gib(n: float) -> str:
    return format_bytes(int(n))


def _why(model: ModelInfo, budget: HardwareBudget, p: Placement) -> str:
    s = p.settings
    host = next(d for d in p.devices if d.kind == "cpu")
    gpus = [d for d in p.devices if d.kind == "gpu"]
    blocks = p.total_layers - 1
    if p.fits:
        if p.verdict == "gpu":
            where = ", ".join(
                f"GPU {d.index} ({d.name}) {_gib(d.total_bytes)} of {_gib(d.budget_bytes)} free"
                for d in gpus
            )
            return f"all {p.total_layers} layers on the GPU: {where}"
        if p.verdict == "cpu":
            why = f"runs on the CPU: {_gib(host.total_bytes)} of {_gib(host.budget_bytes)} RAM"
            return why + ("" if not gpus else "; no layer fits on the GPU next to its buffers")
        on_gpu = sum(d.layers for d in gpus)
        moe = f", experts of {p.n_cpu_moe} blocks on the CPU" if p.n_cpu_moe else ""
        return (
            f"{on_gpu} of {blocks} blocks on the GPU{moe}; the rest and "
            f"{_gib(host.total_bytes)} in RAM ({_gib(host.budget_bytes)} available)"
        )
    short = []
    for d in gpus:
        need = d.total_bytes + s.gpu_margin_bytes - d.budget_bytes
        if need > 0:
            short.append(
                f"GPU {d.index} ({d.name}) needs {_gib(d.total_bytes)} + "
                f"{_gib(s.gpu_margin_bytes)} margin, has {_gib(d.budget_bytes)} free "
                f"({_gib(need)} short)"
            )
    need = host.total_bytes + s.ram_margin_bytes - host.budget_bytes
    if need > 0:
        short.append(
            f"RAM: the CPU part needs {_gib(host.total_bytes)} + "
            f"{_gib(s.ram_margin_bytes)} margin, {_gib(host.budget_bytes)} available "
            f"({_gib(need)} short)"
        )
    return "does not fit: " + "; ".join(short) if short else "does not fit"


def _notes(model: ModelInfo, budget: HardwareBudget, run: _Run, p: Placement) -> tuple[str, ...]:
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
            f"{model.n_layer_skipped} MTP block(s) ({_gib(model.skipped_bytes)}) are "
            "in the file but not loaded"
        )
    if budget.gpus and p.gpu_layers == 0 and s.op_offload:
        notes.append(
            "with CUDA present llama.cpp still runs prompt matmuls on GPU 0, so it "
            "needs the CUDA context and a compute buffer there"
        )
    return tuple(notes)


# --------------------------------------------------------------------------------------------
# Suggestions


def _requantized(model: ModelInfo, ratio: float, label: str) -> ModelInfo:
    """The same model at another quantization: quantized weights scale with bits per weight."""

    def scale(n: int) -> int:
        return int(n * ratio)

    layers = tuple(
        LayerWeights(
            scale(x.attention_bytes),
            scale(x.ffn_bytes),
            scale(x.expert_bytes),
            scale(x.cuda_pad_bytes),
            scale(x.expert_cuda_pad_bytes),
            scale(x.largest_matrix_bytes),
            scale(x.second_matrix_bytes),
        )
        for x in model.layers
    )
    return replace(
        model,
        quant=label,
        layers=layers,
        token_embd_bytes=scale(model.token_embd_bytes),
        output_bytes=scale(model.output_bytes),
        output_cuda_pad_bytes=scale(model.output_cuda_pad_bytes),
        tensor_bytes=scale(model.tensor_bytes),
        file_size=scale(model.file_size),
    )


def _model_bpw(model: ModelInfo) -> float:
    for label, bpw in QUANT_LADDER:
        if label == model.quant.upper():
            return bpw
    return model.tensor_bytes * 8 / model.n_params if model.n_params else 16.0


def _better(base: Placement, p: Placement) -> bool:
    if not base.fits:
        return p.fits
    rank = {"none": 0, "cpu": 1, "partial": 2, "gpu": 3}
    return p.fits and (rank[p.verdict] > rank[base.verdict] or p.decode_tps > base.decode_tps * 1.2)


def _tps(p: Placement) -> str:
    return f"~{p.decode_tps:.1f} tok/s" if p.decode_tps < 10 else f"~{p.decode_tps:.0f} tok/s"


def _outcome(p: Placement) -> str:
    if p.verdict == "partial" and p.n_cpu_moe:
        where = f"all layers on GPU, experts of {p.n_cpu_moe} blocks on CPU"
    else:
        where = {
            "gpu": "all layers on GPU",
            "partial": f"{p.gpu_layers}/{p.total_layers} layers on GPU",
            "cpu": "CPU only",
        }.get(p.verdict, "does not fit")
    return f"{where}, {_tps(p)}"


def _suggestions(
    model: ModelInfo, budget: HardwareBudget, settings: RunSettings, base: Placement
) -> tuple[Suggestion, ...]:
    """Cheapest changes first: settings that cost nothing, then context, quality, money."""
    out: list[Suggestion] = []
    s = settings

    def attempt(label: str, kind: str, m: ModelInfo, b: HardwareBudget, st: RunSettings) -> bool:
        try:
            p = _search(m, b, _resolve(m, st), st)
        except FitError:
            return False
        if not _better(base, p):
            return False
        out.append(
            Suggestion(
                f"{label}: {_outcome(p)}",
                kind,
                p.fits,
                p.verdict,
                p.gpu_layers,
                p.prompt_tps,
                p.decode_tps,
                st if st is not settings else None,
            )
        )
        return True

    fa_on = base.settings.flash_attn
    if not fa_on:
        attempt("flash attention on", "flash_attn", model, budget, replace(s, flash_attn=True))
    if s.type_k == "f16" or s.type_v == "f16":
        attempt(
            "q8_0 KV cache (with flash attention)",
            "kv_cache",
            model,
            budget,
            replace(s, type_k="q8_0", type_v="q8_0", flash_attn=True),
        )
    n_ctx = base.settings.n_ctx
    ctx = n_ctx // 2
    while ctx >= 2048:
        if attempt(
            f"context {ctx} (from {n_ctx})", "context", model, budget, replace(s, n_ctx=ctx)
        ):
            break
        ctx //= 2
    bpw = _model_bpw(model)
    for label, target in QUANT_LADDER:
        if target >= bpw - 0.05:
            continue
        size = _gib(model.tensor_bytes * target / bpw)
        if attempt(
            f"{label} (~{target:.1f} bits/weight, {size})",
            "quant",
            _requantized(model, target / bpw, label),
            budget,
            s,
        ):
            break
    _upgrades(model, budget, s, base, attempt)
    return tuple(out[:6])


_Attempt = Callable[[str, str, ModelInfo, "HardwareBudget", RunSettings], bool]


def _upgrades(
    model: ModelInfo, budget: HardwareBudget, s: RunSettings, base: Placement, attempt: _Attempt
) -> None:
    host = next(d for d in base.devices if d.kind == "cpu")
    short_ram = host.total_bytes + s.ram_margin_bytes - host.budget_bytes
    if short_ram > 0 or (not base.fits and not budget.gpus):
        step = next((g for g in (8, 16, 32, 64, 128, 256, 512) if g * GiB >= short_ram), 1024)
        more = replace(
            budget,
            ram_total_bytes=budget.ram_total_bytes + step * GiB,
            ram_available_bytes=budget.ram_available_bytes + step * GiB,
            name=f"{budget.name} +{step} GB RAM",
        )
        attempt(f"+{step} GB RAM", "ram", model, more, s)
    if base.verdict != "gpu":
        # Enough VRAM for everything: the model's GPU total as if on one large card.
        probe = HardwareBudget.hypothetical(
            ram_bytes=budget.ram_available_bytes,
            gpus=[("probe", 1 << 50)],
            cpu_threads=budget.cpu_threads,
        )
        need = _search(model, probe, _resolve(model, s), s).devices[0].total_bytes
        have = sum(max(g.free_bytes - s.gpu_margin_bytes, 0) for g in budget.gpus)
        size = next(
            (
                v
                for v in (8, 12, 16, 24, 32, 48, 80, 96, 141, 192)
                if v * GiB >= need + s.gpu_margin_bytes
            ),
            None,
        )
        if size is None:
            return
        card = {
            8: "RTX 4060",
            12: "RTX 4070",
            16: "RTX 4080",
            24: "RTX 4090",
            32: "RTX 5090",
            48: "RTX A6000",
            80: "H100",
            96: "RTX PRO 6000",
            141: "H200",
            192: "B200",
        }[size]
        if have and size * GiB <= have:
            return
        upgraded = replace(
            budget,
            gpus=(GpuBudget(0, card, size * GiB, size * GiB, speed.gpu_spec(card)[0]),),
            name=f"{_article(size)} {size} GB GPU",
        )
        attempt(f"{_article(size)} {size} GB GPU ({card}-class)", "gpu", model, upgraded, s)


def _article(n: int) -> str:
    return "an" if str(n).startswith(("8", "11", "18")) else "a"
