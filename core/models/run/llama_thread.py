"""The one thread in this process that runs llama.cpp's compute: loads, warm-ups, decodes, benches.

ggml's CPU backend (the OpenMP build llama-cpp-python compiles) keeps a team of helper threads
per thread that computes. While a thread that once computed is still alive, compute started from
any other thread runs several times slower: measured here on the demo model, 31 tok/s decoding
from a second thread against 106 tok/s from the thread that warmed the model up. Thread workers
(the TUI's, a thread pool's) are long-lived and never the same thread twice in a row, so every
llama.cpp call that computes goes through ``run`` (blocking) or ``submit`` instead, and they all
execute on one daemon thread, in order. Calls made on that thread run directly.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple["Future[Any]", Callable[[], Any]]


class _LlamaThread:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def is_current(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue ``fn`` for the llama thread; its result (or exception) arrives on the future."""
        future: Future[T] = Future()
        self._ensure_started()
        self._jobs.put((future, fn))
        return future

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the llama thread, waiting for it (directly when already there)."""
        if self.is_current():
            return fn()
        return self.submit(fn).result()

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                # A daemon: a load or reply still running when the process exits must not hold
                # the exit up (the user quitting is what ends it).
                self._thread = threading.Thread(target=self._serve, name="llama", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            future, fn = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # handed to the caller, who raises it
                future.set_exception(exc)
            else:
                future.set_result(result)


LLAMA_THREAD = _LlamaThread()
