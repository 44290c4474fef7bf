"""Predicted against measured memory, like for like: the fit's buffers beside the buffers
llama.cpp itself reports allocating (weights, KV cache, compute, output, per device).

Peak RSS is a different figure and stays apart: it counts the model file's pages as they are
read through the memory map (page cache, shared with every other reader of the file and given
back under pressure), repacked copies of weights made for faster CPU matmuls, and the Python
process itself. A run whose RSS grew half of the prediction, or twice it, did not miss.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from rigdeck.core.models.fit.layout import HOST_RUNTIME_BYTES, HOST_RUNTIME_CUDA_BYTES
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.run.llama_log import is_host_buffer

COMPONENTS = ("weights", "KV", "compute", "output")
# llama.cpp's buffer kinds, as parse_buffer_sizes names them, to the fit's components.
_KINDS = {"model": "weights", "KV": "KV", "compute": "compute", "output": "output"}
_DEVICE_INDEX = re.compile(r"(\d+)$")


def predicted_buffers(placement: Placement) -> dict[str, int]:
    """``{"CPU weights": bytes, "GPU0 KV": ...}``: what the fit expects llama.cpp to allocate.

    The host's other bytes less the process's own runtime are the output (logits) buffer.
    """
    runtime = (
        HOST_RUNTIME_CUDA_BYTES
        if any(d.kind == "gpu" for d in placement.devices)
        else (HOST_RUNTIME_BYTES)
    )
    out: dict[str, int] = {}
    for d in placement.devices:
        device = "CPU" if d.kind == "cpu" else f"GPU{d.index or 0}"
        figures = {
            "weights": d.weights_bytes,
            "KV": d.kv_bytes,
            "compute": d.compute_bytes,
            "output": max(d.other_bytes - runtime, 0) if d.kind == "cpu" else 0,
        }
        for component, value in figures.items():
            if value:
                out[f"{device} {component}"] = value
    return out


def reported_buffers(llama_buffers: Mapping[str, int]) -> tuple[dict[str, int], int]:
    """llama.cpp's buffers in the same keys as ``predicted_buffers``, and the repacked bytes.

    Repacked weights (CPU_REPACK) are copies of weights already counted in the mapped file:
    the fit counts them once, so they are returned apart rather than added to the weights.
    """
    out: dict[str, int] = {}
    repacked = 0
    for key, value in llama_buffers.items():
        name, _, kind = key.partition(" ")
        if name == "CPU_REPACK":
            repacked += value
            continue
        component = _KINDS.get(kind)
        if component is None:
            continue
        if is_host_buffer(key):
            device = "CPU"
        else:
            match = _DEVICE_INDEX.search(name)
            device = f"GPU{match[1] if match else 0}"
        out[f"{device} {component}"] = out.get(f"{device} {component}", 0) + value
    return out, repacked


@dataclass(frozen=True)
class MemoryComparison:
    """Per buffer: the fit's bytes and llama.cpp's; totals; and the RSS figures apart."""

    predicted: Mapping[str, int]
    reported: Mapping[str, int]
    repacked_bytes: int
    peak_rss_bytes: int | None
    rss_growth_bytes: int | None

    @property
    def predicted_total(self) -> int:
        return sum(self.predicted.values())

    @property
    def reported_total(self) -> int:
        return sum(self.reported.values())

    @property
    def keys(self) -> list[str]:
        """Every buffer either side names, devices in order, components in COMPONENTS order."""
        names = set(self.predicted) | set(self.reported)

        def order(key: str) -> tuple[int, str, int]:
            device, _, component = key.partition(" ")
            rank = COMPONENTS.index(component) if component in COMPONENTS else len(COMPONENTS)
            return (0 if device.startswith("GPU") else 1, device, rank)

        return sorted(names, key=order)

    def to_json(self) -> dict[str, object]:
        return {
            "buffers": {
                k: {"predicted": self.predicted.get(k, 0), "llama_cpp": self.reported.get(k, 0)}
                for k in self.keys
            },
            "predicted_buffers_total": self.predicted_total,
            "llama_cpp_buffers_total": self.reported_total,
            "repacked_bytes": self.repacked_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "rss_growth_bytes": self.rss_growth_bytes,
        }


def compare_memory(
    predicted: Mapping[str, int],
    llama_buffers: Mapping[str, int],
    *,
    peak_rss_bytes: int | None = None,
    rss_growth_bytes: int | None = None,
) -> MemoryComparison:
    reported, repacked = reported_buffers(llama_buffers)
    return MemoryComparison(dict(predicted), reported, repacked, peak_rss_bytes, rss_growth_bytes)


def peak_rss_bytes() -> int | None:
    """This process's peak resident set so far (Linux and macOS); None where it cannot tell."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024
