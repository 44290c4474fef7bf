"""How a model will run (context, KV cache, flash attention, batch): RunSettings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rigdeck.core.errors import FitError

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
        if quantized(self.type_v) and self.flash_attn is False:
            raise FitError(f"a {self.type_v} V cache needs flash attention; turn it on or use f16")
        if self.gpu_layers is not None and self.gpu_layers < 0:
            raise FitError(f"gpu_layers must be 0 or more, not {self.gpu_layers}")
        if self.cpu_moe is not None and self.cpu_moe < 0:
            raise FitError(f"cpu_moe must be 0 or more, not {self.cpu_moe}")


def quantized(kv_type: str) -> bool:
    return KV_TYPES[kv_type][0] > 1
