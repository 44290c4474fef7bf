"""What a run is: the plan a fit hands the runner, what a load and a reply measured,
and the placements one step down after a failed load."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rigdeck.core.errors import RunError
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.fit.settings import KvChoice
from rigdeck.core.models.run.llama_log import is_host_buffer
from rigdeck.core.models.run.memory import predicted_buffers

# ggml_type values of the KV cache types a plan may ask for (ggml.h): the user's choices.
GGML_KV_TYPES: Mapping[KvChoice, int] = {"f16": 1, "q4_0": 2, "q8_0": 8}

# Called with (phase, fraction of that phase done); phases run in this order.
ProgressCallback = Callable[[str, float], None]
PHASES = ("reading", "loading", "warming")

Role = Literal["system", "user", "assistant"]


# --------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class RunPlan:
    """How to load a model: the placement the fit code chose, plus what it predicted.

    ``gpu_layers``: layers offloaded to the GPU, -1 for all. ``n_threads``: generation threads,
    None lets llama-cpp-python choose; ``n_threads_batch``: prompt threads, None: ``n_threads``.
    ``seed``: None for a random seed. ``n_cpu_moe``: the routed experts of the first N blocks
    stay in host memory (llama.cpp's --n-cpu-moe). ``tensor_split``: per-GPU proportions of the
    offloaded layers (empty: llama.cpp's own split). ``swa_full``: a full-size cache for
    sliding-window layers; False (llama.cpp's tools' default, and what the fit assumes) although
    llama-cpp-python would default to True. The ``predicted_*`` figures are optional and only
    travel to the run history, next to what was measured.
    """

    model_path: str
    gpu_layers: int = 0
    n_ctx: int = 4096
    type_k: KvChoice = "f16"
    type_v: KvChoice = "f16"
    flash_attn: bool = False
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_batch: int = 512
    n_ubatch: int = 512
    seed: int | None = None
    n_cpu_moe: int = 0
    tensor_split: tuple[float, ...] = ()
    swa_full: bool = False
    predicted_vram_bytes: int | None = None
    predicted_ram_bytes: int | None = None
    predicted_prompt_tps: float | None = None
    predicted_decode_tps: float | None = None
    predicted_buffers: tuple[tuple[str, int], ...] = ()
    """The fit's buffers in llama.cpp's terms, ``(("CPU weights", bytes), ...)``: see
    ``run.memory``; they travel to the run history beside llama.cpp's own."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_path", os.fspath(self.model_path))
        for name in ("type_k", "type_v"):
            value = getattr(self, name)
            if value not in GGML_KV_TYPES:
                raise RunError(f"{name} {value!r} is not one of {', '.join(GGML_KV_TYPES)}")
        if self.type_v != "f16" and not self.flash_attn:
            raise RunError(
                f"a {self.type_v} V cache needs flash attention: turn flash_attn on or use f16"
            )
        if self.gpu_layers < -1:
            raise RunError(f"gpu_layers must be -1 (all) or >= 0, not {self.gpu_layers}")
        for name in ("n_ctx", "n_batch", "n_ubatch"):
            if getattr(self, name) < 1:
                raise RunError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("n_threads", "n_threads_batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RunError(f"{name} must be at least 1, not {value}")
        if self.n_cpu_moe < 0:
            raise RunError(f"n_cpu_moe must be 0 or more, not {self.n_cpu_moe}")
        split = tuple(float(x) for x in self.tensor_split)
        if any(x < 0 for x in split) or (split and sum(split) <= 0):
            raise RunError(
                f"tensor_split {list(split)} needs non-negative proportions that add up to"
                " more than zero"
            )
        object.__setattr__(self, "tensor_split", split)

    def settings(self) -> dict[str, Any]:
        """What shapes a run's memory and speed: the plan less the path and the predictions."""
        return {
            "gpu_layers": self.gpu_layers,
            "n_ctx": self.n_ctx,
            "type_k": self.type_k,
            "type_v": self.type_v,
            "flash_attn": self.flash_attn,
            "n_threads": self.n_threads,
            "n_threads_batch": self.batch_threads,
            "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch,
            "n_cpu_moe": self.n_cpu_moe,
            "tensor_split": list(self.tensor_split),
            "swa_full": self.swa_full,
        }

    @property
    def batch_threads(self) -> int | None:
        """Threads prompt batches load with (``n_threads`` when not set apart)."""
        return self.n_threads_batch or self.n_threads

    def without_predictions(self) -> RunPlan:
        return replace(
            self,
            predicted_vram_bytes=None,
            predicted_ram_bytes=None,
            predicted_prompt_tps=None,
            predicted_decode_tps=None,
            predicted_buffers=(),
        )

    def describe(self) -> str:
        layers = "all" if self.gpu_layers < 0 else str(self.gpu_layers)
        moe = f", experts of {self.n_cpu_moe} blocks on the CPU" if self.n_cpu_moe else ""
        return f"{layers} GPU layers{moe}, context {self.n_ctx}"


@dataclass(frozen=True)
class LoadStats:
    """What a load cost, measured. Bytes are ints; None means this machine cannot tell."""

    load_seconds: float
    host_rss_delta_bytes: int
    gpu_bytes: int | None
    llama_buffers: Mapping[str, int] = field(default_factory=dict, hash=False)
    n_layers: int | None = None
    offloaded_layers: int | None = None
    gpu_offload_supported: bool = False
    chat_template: Literal["gguf", "chatml-fallback"] = "gguf"

    @property
    def host_buffer_bytes(self) -> int:
        """llama.cpp's buffers in host memory (CPU, CPU_Mapped, CUDA_Host, ...)."""
        return sum(v for k, v in self.llama_buffers.items() if is_host_buffer(k))

    @property
    def device_buffer_bytes(self) -> int:
        """llama.cpp's buffers on accelerators (CUDA0, Vulkan0, Metal, ...)."""
        return sum(v for k, v in self.llama_buffers.items() if not is_host_buffer(k))


@dataclass(frozen=True)
class GenerationStats:
    """One reply, measured.

    ``prompt_tokens_evaluated`` excludes the prefix reused from the KV cache (a chat's earlier
    turns). ``prompt_tps``/``decode_tps`` come from llama.cpp's perf counters when
    ``timing_source`` is "llama.cpp", else from the wall clock. ``wall_decode_tps`` is always the
    wall clock between the first and last token, as a reader of the stream sees it.
    """

    prompt_tokens: int
    prompt_tokens_evaluated: int
    decode_tokens: int
    prompt_tps: float | None
    decode_tps: float | None
    wall_decode_tps: float | None
    time_to_first_token_s: float | None
    total_s: float
    finish_reason: Literal["stop", "length", "cancelled"]
    timing_source: Literal["llama.cpp", "measured"]


@dataclass(frozen=True)
class Sampling:
    """Sampling settings for one reply. ``temperature`` 0 is greedy; ``seed`` None is random."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int | None = None
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


# --------------------------------------------------------------------------------------------
# Errors


class LoadError(RunError):
    """A load failed. ``reason`` is one of "missing", "corrupt", "architecture",
    "out-of-memory", "other"; ``next_plans`` are smaller placements the UI can offer."""

    def __init__(
        self, message: str, *, plan: RunPlan, reason: str, next_plans: Sequence[RunPlan] = ()
    ) -> None:
        super().__init__(message)
        self.plan = plan
        self.reason = reason
        self.next_plans = list(next_plans)


class LoadCancelled(RunError):
    """The load was cancelled through its cancel event."""


# --------------------------------------------------------------------------------------------
# Placement steps down


def next_plans_down(plan: RunPlan, *, n_layers: int | None = None) -> list[RunPlan]:
    """Smaller placements to try after a failed load, closest first.

    First the same layers with a shorter context (keeps the speed), then fewer GPU layers at the
    original context, down to CPU only. ``n_layers`` (the model's block count) lets a plan with
    ``gpu_layers=-1`` step down in quarters; without it, the only GPU step is CPU only.
    Predictions are dropped: they belong to the old placement.
    """
    base = plan.without_predictions()
    steps: list[RunPlan] = []
    ctx = base.n_ctx
    for _ in range(3):
        ctx //= 2
        if ctx < 512:
            break
        steps.append(replace(base, n_ctx=ctx))
    if base.gpu_layers != 0:
        total = n_layers if base.gpu_layers < 0 else base.gpu_layers
        if total is not None:
            if n_layers is not None:
                # -1 and n_layers + 1 (the output layer) both mean "all": start below that.
                total = min(total, n_layers)
            for fraction in (0.75, 0.5, 0.25):
                layers = int(total * fraction)
                if 0 < layers < total:
                    steps.append(replace(base, gpu_layers=layers))
        steps.append(replace(base, gpu_layers=0))
    unique: list[RunPlan] = []
    for step in steps:
        if step != base and step not in unique:
            unique.append(step)
    return unique


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
        n_threads_batch=threads or s.n_threads_batch or s.n_threads,
        n_batch=s.n_batch,
        n_ubatch=s.n_ubatch,
        n_cpu_moe=placement.n_cpu_moe,
        tensor_split=placement.tensor_split,
        swa_full=s.swa_full,
        predicted_vram_bytes=placement.gpu_bytes or None,
        predicted_ram_bytes=placement.host_bytes,
        predicted_prompt_tps=placement.prompt_tps or None,
        predicted_decode_tps=placement.decode_tps or None,
        predicted_buffers=tuple(sorted(predicted_buffers(placement).items())),
    )
