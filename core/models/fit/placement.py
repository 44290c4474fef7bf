"""What a fit decided: where each layer goes, what each device holds, how fast."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rigdeck.core.models.fit.settings import RunSettings


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
class Shortfall:
    """A device the placement does not fit: what it needs (with its margin) against its budget."""

    device: DevicePlacement
    margin_bytes: int

    @property
    def need_bytes(self) -> int:
        return self.device.total_bytes + self.margin_bytes

    @property
    def short_bytes(self) -> int:
        return self.need_bytes - self.device.budget_bytes


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

    @property
    def shortfalls(self) -> tuple[Shortfall, ...]:
        """Every device short of memory, GPUs first: empty when the placement fits."""
        out = []
        for d in self.devices:
            margin = (
                self.settings.gpu_margin_bytes
                if d.kind == "gpu"
                else self.settings.ram_margin_bytes
            )
            short = Shortfall(d, margin)
            if short.short_bytes > 0:
                out.append(short)
        return tuple(out)
