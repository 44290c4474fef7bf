"""llama-cpp-python, imported once: its log captured, load progress hooked."""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from rigdeck.core.errors import RunError
from rigdeck.core.models.run.llama_thread import LLAMA_THREAD

log = logging.getLogger(__name__)


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


LOG_SINK = _LogSink()
_setup_lock = threading.Lock()
_installed = False
LOAD_STATE = threading.local()


def _install(llama_cpp: ModuleType, lowlevel: ModuleType) -> None:
    global _installed
    LOG_SINK.c_callback = lowlevel.llama_log_callback(LOG_SINK.receive)
    lowlevel.llama_log_set(LOG_SINK.c_callback, ctypes.c_void_p(0))

    # Llama() builds its model params from llama_model_default_params() and exposes no progress
    # callback; this wrapper adds the loading thread's callback (and only when one is set).
    original = lowlevel.llama_model_default_params

    def default_params_with_progress() -> Any:
        params = original()
        callback = getattr(LOAD_STATE, "progress", None)
        if callback is not None:
            params.progress_callback = callback
        # Llama() has no argument for tensor buffer-type overrides (llama.cpp's -ot and
        # --n-cpu-moe); the loading thread's list rides in the same way.
        overrides = getattr(LOAD_STATE, "overrides", None)
        if overrides is not None:
            params.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
        return params

    # Patched on the module (typed as ModuleType): every later load reads the wrapper.
    setattr(lowlevel, "llama_model_default_params", default_params_with_progress)  # noqa: B010

    # With verbose=False, llama-cpp-python silences loads by dup2-ing /dev/null over fds 1 and 2
    # for the whole process, which would blank the TUI's own output while a worker loads. The C
    # log already goes to our sink, so nothing needs silencing.
    for name in ("llama", "_internals"):
        module = getattr(llama_cpp, name, None)
        if module is not None and hasattr(module, "suppress_stdout_stderr"):
            module.suppress_stdout_stderr = _NoRedirect

    # Every decode in the process runs on the llama thread (see llama_thread). rigdeck's own
    # loads, replies and benches run there whole; this catches what runs llama.cpp from threads
    # of its own: llama-cpp-python's server (a thread pool) and a caller's own eval.
    context = getattr(getattr(llama_cpp, "_internals", None), "LlamaContext", None)
    for name in ("decode", "encode"):
        method = getattr(context, name, None)
        if method is not None:
            setattr(context, name, _on_llama_thread(method))
    _installed = True


def _on_llama_thread(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def on_llama_thread(self: Any, *args: Any, **kwargs: Any) -> Any:
        return LLAMA_THREAD.run(lambda: method(self, *args, **kwargs))

    return on_llama_thread


def llama_modules() -> tuple[ModuleType, ModuleType]:
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
        llama_modules()
    except RunError:
        return False
    return True


def gpu_offload_supported() -> bool:
    """True when this llama.cpp build can put layers on a GPU (CUDA, Metal, Vulkan, ...)."""
    try:
        _, lowlevel = llama_modules()
        return bool(lowlevel.llama_supports_gpu_offload())
    except (RunError, AttributeError):
        return False
