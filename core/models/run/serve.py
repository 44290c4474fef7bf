"""Serve a model over an OpenAI-compatible HTTP API: llama-cpp-python's server, as a subprocess.

A separate process, so stopping it frees the port and every byte the model held. Bound to
127.0.0.1 unless asked otherwise; ready once ``GET /v1/models`` answers.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rigdeck.core.errors import RunError
from rigdeck.core.models.run.llama_log import explain_load_failure
from rigdeck.core.models.run.plan import GGML_KV_TYPES, RunPlan

# import name -> distribution name, of what `pip install 'llama-cpp-python[server]'` brings.
SERVER_PACKAGES: dict[str, str] = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "sse_starlette": "sse-starlette",
    "starlette_context": "starlette-context",
    "pydantic_settings": "pydantic-settings",
}

_POLL_S = 0.2


def missing_server_packages() -> list[str]:
    """Distributions the llama-cpp-python server needs that this interpreter lacks."""
    return [
        dist for module, dist in SERVER_PACKAGES.items() if importlib.util.find_spec(module) is None
    ]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def server_command(
    plan: RunPlan,
    *,
    host: str,
    port: int,
    model_alias: str,
    python: str = sys.executable,
) -> list[str]:
    """The command line that serves ``plan``: the same placement the runner would load.

    The server runs through ``serve_child``, which applies what llama_cpp.server has no option
    for (the sliding-window cache size, experts kept on the CPU) before the server's main.
    """
    from rigdeck.core.models.run.serve_child import plan_json

    command = [
        python,
        "-m",
        "rigdeck.core.models.run.serve_child",
        plan_json(plan),
        "--",
        "--model",
        plan.model_path,
        "--model_alias",
        model_alias,
        "--n_gpu_layers",
        str(plan.gpu_layers),
        "--n_ctx",
        str(plan.n_ctx),
        "--n_batch",
        str(plan.n_batch),
        "--n_ubatch",
        str(plan.n_ubatch),
        "--flash_attn",
        "true" if plan.flash_attn else "false",
        "--type_k",
        str(GGML_KV_TYPES[plan.type_k]),
        "--type_v",
        str(GGML_KV_TYPES[plan.type_v]),
        "--host",
        host,
        "--port",
        str(port),
    ]
    if plan.n_threads is not None:
        command += ["--n_threads", str(plan.n_threads)]
    if plan.batch_threads is not None:
        command += ["--n_threads_batch", str(plan.batch_threads)]
    if plan.seed is not None:
        command += ["--seed", str(plan.seed)]
    if plan.tensor_split:
        command += ["--tensor_split", *(str(x) for x in plan.tensor_split)]
    return command


@dataclass(frozen=True)
class ServeHandle:
    """A running server. ``url`` is the OpenAI base URL (``http://127.0.0.1:PORT/v1``)."""

    url: str
    pid: int
    model_alias: str
    log_path: Path
    _process: subprocess.Popen[bytes] = field(repr=False, compare=False)
    _log: IO[bytes] = field(repr=False, compare=False)

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and wait for it to exit (politely, then by force)."""
        process = self._process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        if not self._log.closed:
            self._log.close()
        with _live_lock:
            _live.discard(self)


_live: set[ServeHandle] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    # A server outliving rigdeck would hold its port and its model's memory for nothing.
    with _live_lock:
        handles = list(_live)
    for handle in handles:
        try:
            handle.stop(timeout=5.0)
        except Exception:  # exiting anyway; best effort
            pass


def _default_log_dir() -> Path:
    from platformdirs import user_state_path

    return user_state_path("rigdeck") / "serve"


def _last_error(log_path: Path) -> str:
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no log"
    # The server prints llama.cpp's log too: its explanation beats the Python traceback's.
    reason, why = explain_load_failure(text)
    if reason != "other":
        return why
    lines = text.splitlines()
    for line in reversed(lines):
        text = line.strip()
        if text and any(w in text for w in ("Error", "error", "Exception", "failed", "Failed")):
            return text[:300]
    return next((line.strip()[:300] for line in reversed(lines) if line.strip()), "no output")


def _models(url: str, timeout: float) -> list[dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=timeout) as response:
            if response.status != 200:
                return None
            body = json.loads(response.read().decode("utf-8"))
    except (OSError, urllib.error.URLError, ValueError):
        return None
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, list) else None


def start_server(
    plan: RunPlan,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    model_alias: str | None = None,
    ready_timeout: float = 120.0,
    log_dir: str | os.PathLike[str] | None = None,
    python: str = sys.executable,
) -> ServeHandle:
    """Start serving ``plan`` and return once the endpoint answers; blocking.

    Raises ``RunError`` when the server packages are missing, the port is taken, the model does
    not load, or the endpoint does not answer within ``ready_timeout`` seconds.
    """
    path = Path(plan.model_path)
    if not path.is_file():
        raise RunError(f"cannot serve {path.name}: no such file {path}")
    if python == sys.executable and (missing := missing_server_packages()):
        raise RunError(
            f"serving needs {', '.join(missing)}: pip install 'llama-cpp-python[server]'"
            f" (or pip install {' '.join(missing)})"
        )
    if port is None:
        port = free_port(host)
    elif port_in_use(host, port):
        raise RunError(f"port {port} on {host} is in use: choose another or leave it empty")
    alias = model_alias or path.stem
    folder = Path(log_dir) if log_dir is not None else _default_log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"rigdeck-serve-{port}.log"
    log_file = log_path.open("wb")
    command = server_command(plan, host=host, port=port, model_alias=alias, python=python)
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    except OSError as exc:
        log_file.close()
        raise RunError(f"cannot start the server: {exc.strerror or exc}") from None

    url_host = f"[{host}]" if ":" in host else ("127.0.0.1" if host == "0.0.0.0" else host)
    url = f"http://{url_host}:{port}/v1"
    handle = ServeHandle(url, process.pid, alias, log_path, process, log_file)
    with _live_lock:
        _live.add(handle)

    deadline = time.monotonic() + ready_timeout
    while True:
        if process.poll() is not None:
            handle.stop()
            raise RunError(
                f"server for {path.name} exited with code {process.returncode}:"
                f" {_last_error(log_path)} (log: {log_path})"
            )
        models = _models(url, timeout=2.0)
        if models is not None and any(m.get("id") == alias for m in models):
            return handle
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            handle.stop()
            raise RunError(
                f"server for {path.name} did not answer within {ready_timeout:.0f} s"
                f" (log: {log_path})"
            )
        # Sleeping in wait() returns at once if the server dies, so a failed load is reported
        # as soon as it happens rather than at the deadline.
        try:
            process.wait(timeout=min(_POLL_S, remaining))
        except subprocess.TimeoutExpired:
            pass
