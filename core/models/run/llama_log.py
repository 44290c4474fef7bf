"""Reading llama.cpp's log: buffer sizes, offloaded layers, why a load failed."""

from __future__ import annotations

import re

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


def is_host_buffer(key: str) -> bool:
    device = key.split(" ", 1)[0]
    return device.startswith("CPU") or device.endswith("_Host")


def layers_from_log(log_text: str) -> tuple[int | None, int | None]:
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
    found = specific or candidates
    return found[0] if found else None
