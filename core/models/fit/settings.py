"""How a model will run (context, KV cache, flash attention, batch): RunSettings, and the one
builder every face uses to make them from the config, command-line flags or pane controls.

The rule for K/V types lives here and only here: one KV type names both caches, and llama.cpp
quantizes the V cache only with flash attention, so with flash attention explicitly off a
quantized choice keeps V at f16 (``RunSettings.v_fallback`` says so) instead of refusing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from rigdeck.core.errors import FitError

MiB = 1 << 20
GiB = 1 << 30

KvType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"]
"""Every cache type the fit can size (llama.cpp accepts these for K and V)."""
KvChoice = Literal["f16", "q8_0", "q4_0"]
"""The KV types a user picks (flag, config, pane) and the runner loads."""
FlashAttn = Literal["auto", "on", "off"]

KV_CHOICES: tuple[KvChoice, ...] = get_args(KvChoice)
FLASH_CHOICES: tuple[FlashAttn, ...] = get_args(FlashAttn)

# (block size, bytes per block) of each cache type.
KV_TYPES: Mapping[KvType, tuple[int, int]] = {
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
_FLASH_BOOL: Mapping[FlashAttn, bool | None] = {"auto": None, "on": True, "off": False}


@dataclass(frozen=True)
class RunSettings:
    """How the model will be run: what shapes its KV cache and compute buffers."""

    n_ctx: int = 4096
    """Context length in tokens (0: the model's training context). llama.cpp pads it to 256."""
    type_k: KvType = "f16"
    type_v: KvType = "f16"
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
    n_threads_batch: int | None = None
    """CPU threads for prompt batches; None: ``n_threads`` when set, else the budget's."""
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
        for name in ("n_threads", "n_threads_batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FitError(f"threads must be at least 1, not {value}")

    @property
    def flash(self) -> FlashAttn:
        """Flash attention as the user chose it: auto, on or off."""
        return "auto" if self.flash_attn is None else ("on" if self.flash_attn else "off")

    @property
    def v_fallback(self) -> bool:
        """True when K is quantized but V stays f16 because flash attention is off.

        The builder makes such settings only from one quantized KV choice with flash attention
        off, so this is the fact every face words as "V f16 (a quantized V needs flash
        attention)".
        """
        return quantized(self.type_k) and self.type_v == "f16" and self.flash_attn is False


def quantized(kv_type: KvType) -> bool:
    return KV_TYPES[kv_type][0] > 1


class ModelsConfig(Protocol):
    """The config's [models] keys the settings come from (core.config.ModelSettings)."""

    @property
    def context(self) -> int: ...
    @property
    def kv_type(self) -> str: ...
    @property
    def flash_attn(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def threads_batch(self) -> int: ...


def parse_kv(text: str) -> KvChoice:
    """A KV cache choice from a flag, a config value or a pane control."""
    value = text.strip().lower()
    for choice in KV_CHOICES:
        if value == choice:
            return choice
    raise FitError(f"KV cache type {text!r} must be one of {', '.join(KV_CHOICES)}")


def parse_flash(value: str | bool | None) -> FlashAttn:
    """Flash attention from a config value ("auto", "on", "off") or an on/off flag (None: auto)."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "on" if value else "off"
    text = value.strip().lower()
    aliases: Mapping[str, FlashAttn] = {"true": "on", "false": "off"}
    for choice in FLASH_CHOICES:
        if text == choice:
            return choice
    if text in aliases:
        return aliases[text]
    raise FitError(f"flash attention {value!r} must be auto, on or off")


def build_run_settings(
    config: ModelsConfig | None = None,
    *,
    ctx: int | None = None,
    kv: str | None = None,
    flash: str | bool | None = None,
    gpu_layers: int | None = None,
    threads: int | None = None,
    threads_batch: int | None = None,
) -> RunSettings:
    """The one way to make RunSettings: what a face asked for over the [models] config.

    ``ctx``, ``kv`` and ``flash`` are a flag's or a pane control's value; None falls back to
    ``config`` (context, kv_type, flash_attn), then to the defaults (4096, f16, auto). ``flash``
    may be a bool (``--flash-attn`` / ``--no-flash-attn``). ``threads`` (``--threads``) sets the
    generation and prompt threads both, as llama-bench's -t does; without it the config's
    ``threads``/``threads_batch`` apply, and 0 there leaves the budget's (llama.cpp's) choice.
    One KV type names both caches; with
    flash attention off a quantized type keeps V at f16 (see ``RunSettings.v_fallback``).
    """
    n_ctx = ctx if ctx is not None else (config.context if config is not None else 4096)
    kv_type = parse_kv(kv if kv is not None else (config.kv_type if config is not None else "f16"))
    if flash is None and config is not None:
        flash = config.flash_attn
    flash_attn = _FLASH_BOOL[parse_flash(flash)]
    type_v: KvChoice = "f16" if flash_attn is False else kv_type
    if threads is None and config is not None:
        threads = config.threads or None
        threads_batch = threads_batch or config.threads_batch or None
    return RunSettings(
        n_ctx=n_ctx,
        type_k=kv_type,
        type_v=type_v,
        flash_attn=flash_attn,
        gpu_layers=gpu_layers,
        n_threads=threads,
        n_threads_batch=threads_batch or threads,
    )
