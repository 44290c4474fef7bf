"""What machine a measurement was taken on: a fingerprint stored beside every run.

A prediction checked against a measurement only means something on the same hardware and the same
llama.cpp build, so every run record carries one of these. Each probe is best effort: a field the
machine cannot tell us is empty or None, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from rigdeck.core.telemetry.nvml import NvmlReader


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory_total_bytes: int | None = None


@dataclass(frozen=True)
class MachineFingerprint:
    hostname: str
    os: str
    cpu_model: str
    cpu_cores: int
    ram_total_bytes: int
    gpus: tuple[GpuInfo, ...] = ()
    gpu_driver: str | None = None
    llama_cpp_version: str | None = None
    llama_backends: tuple[str, ...] = ()
    gpu_offload: bool = False

    @property
    def key(self) -> str:
        """A short stable id: same hardware and build -> same key (hostname excluded: renames)."""
        payload = self.to_dict()
        payload.pop("hostname", None)
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return digest[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineFingerprint:
        gpus = tuple(GpuInfo(**g) for g in data.get("gpus", ()))
        return cls(
            hostname=str(data.get("hostname", "")),
            os=str(data.get("os", "")),
            cpu_model=str(data.get("cpu_model", "")),
            cpu_cores=int(data.get("cpu_cores", 0)),
            ram_total_bytes=int(data.get("ram_total_bytes", 0)),
            gpus=gpus,
            gpu_driver=data.get("gpu_driver"),
            llama_cpp_version=data.get("llama_cpp_version"),
            llama_backends=tuple(data.get("llama_backends", ())),
            gpu_offload=bool(data.get("gpu_offload", False)),
        )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _reader(library: Any = None) -> NvmlReader:
    # NVML opens through the telemetry wrapper only; no process list: nothing here needs it.
    from rigdeck.core.telemetry.nvml import NvmlReader

    return NvmlReader(library, read_processes=False)


def gpu_inventory(library: Any = None) -> tuple[tuple[GpuInfo, ...], str | None]:
    """Every GPU's name and memory, and the driver version; empty without a usable driver."""
    reader = _reader(library)
    try:
        gpus = tuple(GpuInfo(name, total) for name, total in reader.inventory())
        return gpus, reader.driver_version
    finally:
        reader.close()


def process_gpu_memory_bytes(pid: int | None = None, *, library: Any = None) -> int | None:
    """GPU memory NVML charges to a process (this one by default), summed over GPUs.

    Zero is a real answer (the process holds no GPU memory); None means unknown, e.g. no driver or
    a container where NVML does not see our pid.
    """
    reader = _reader(library)
    try:
        return reader.process_memory_bytes(os.getpid() if pid is None else pid)
    finally:
        reader.close()


_BACKEND_RE = re.compile(r"(?:^|\|)\s*([A-Za-z][A-Za-z0-9_]*)\s*:")


def llama_build() -> tuple[str | None, tuple[str, ...], bool]:
    """(llama-cpp-python version, backend names from llama.cpp's system info, GPU offload)."""
    try:
        import llama_cpp
    except Exception:
        return None, (), False
    version = getattr(llama_cpp, "__version__", None)
    try:
        info = _text(llama_cpp.llama_print_system_info())
    except Exception:
        info = ""
    # System info reads "CPU : SSE3 = 1 | AVX = 1 | ... | CUDA : ARCHS = 900 | ..."; the names
    # before " : " are the compiled-in backends.
    backends: list[str] = []
    for segment in info.split("|"):
        match = _BACKEND_RE.match(segment)
        if match and "=" not in segment.split(":", 1)[0] and match.group(1) not in backends:
            backends.append(match.group(1))
    try:
        offload = bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        offload = False
    return version, tuple(backends), offload


@cache
def fingerprint() -> MachineFingerprint:
    """This machine, probed once per process (hardware and build do not change under us)."""
    gpus, driver = gpu_inventory()
    version, backends, offload = llama_build()
    return MachineFingerprint(
        hostname=socket.gethostname(),
        os=f"{platform.system()} {platform.release()}",
        cpu_model=_cpu_model(),
        cpu_cores=psutil.cpu_count(logical=True) or 0,
        ram_total_bytes=int(psutil.virtual_memory().total),
        gpus=gpus,
        gpu_driver=driver,
        llama_cpp_version=version,
        llama_backends=backends,
        gpu_offload=offload,
    )
