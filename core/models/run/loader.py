"""Loading a plan through llama-cpp-python, exactly as placed, and measuring the load."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
import time
from contextlib import suppress
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import psutil

from rigdeck.core.errors import RigdeckError, RunError
from rigdeck.core.machine import fingerprint, process_gpu_memory_bytes
from rigdeck.core.models.run.history import RunHistory, RunRecord
from rigdeck.core.models.run.llama_glue import LOAD_STATE, LOG_SINK, llama_modules
from rigdeck.core.models.run.llama_log import (
    explain_load_failure,
    is_host_buffer,
    layers_from_log,
    parse_buffer_sizes,
)
from rigdeck.core.models.run.llama_thread import LLAMA_THREAD
from rigdeck.core.models.run.plan import (
    GGML_KV_TYPES,
    LoadCancelled,
    LoadError,
    LoadStats,
    ProgressCallback,
    RunPlan,
    next_plans_down,
)
from rigdeck.core.models.run.session import LoadedModel

log = logging.getLogger(__name__)


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
    # Both always explicit when known: llama-cpp-python's own default is half the logical
    # cores for generation, not what the fit predicted the speed for.
    if plan.n_threads is not None:
        kwargs["n_threads"] = plan.n_threads
    if plan.batch_threads is not None:
        kwargs["n_threads_batch"] = plan.batch_threads
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
        os.path.dirname(llama_cpp.__file__ or ""), "lib"
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
        from rigdeck.core.models.format.gguf import read_gguf

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
    recorded with the measured memory beside the plan's predictions. The load runs on the
    llama thread (see ``llama_thread``), where every later decode of the model runs too.
    """
    return LLAMA_THREAD.run(
        lambda: _load(plan, on_progress=on_progress, cancel=cancel, history=history, kind=kind)
    )


def _load(
    plan: RunPlan,
    *,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
    history: RunHistory | None,
    kind: str,
) -> LoadedModel:
    llama_cpp, lowlevel = llama_modules()
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
    with LOG_SINK.capture() as captured:
        LOAD_STATE.progress = c_progress
        LOAD_STATE.overrides = overrides
        try:
            llm = llama_cpp.Llama(model_path=str(path), **_llama_kwargs(plan))
        except Exception as exc:  # the binding raises ValueError/RuntimeError; the log says why
            failure = explain_load_failure("".join(captured), exc)
        finally:
            LOAD_STATE.progress = None
            LOAD_STATE.overrides = None
        log_text = "".join(captured)
    n_layers, offloaded = layers_from_log(log_text)
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
        if gpu_bytes == 0 and any(not is_host_buffer(k) for k in buffers):
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
        predicted_buffers=dict(plan.predicted_buffers),
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
