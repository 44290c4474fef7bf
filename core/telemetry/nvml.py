"""NVIDIA GPUs through nvidia-ml-py, every call through one query function.

NVML raises for fields a GPU does not support (fans on datacentre cards, power on some laptops),
and for a GPU that fell off the bus. The UI must never see those: ``query`` turns a per-field
failure into ``None`` and remembers a lost GPU, so one bad field or card costs one N/A, not a pane.
The library is injected so tests can reproduce the real errors without a GPU.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import psutil

from rigdeck.core.telemetry.snapshot import GpuProcess, GpuStats

T = TypeVar("T")

# Reasons a GPU runs below its clocks, in the words nvidia-smi uses; idle is not worth a warning.
_THROTTLE_REASONS: tuple[tuple[str, str], ...] = (
    ("nvmlClocksThrottleReasonSwPowerCap", "power cap"),
    ("nvmlClocksThrottleReasonHwSlowdown", "hw slowdown"),
    ("nvmlClocksThrottleReasonSwThermalSlowdown", "thermal (sw)"),
    ("nvmlClocksThrottleReasonHwThermalSlowdown", "thermal (hw)"),
    ("nvmlClocksThrottleReasonHwPowerBrakeSlowdown", "power brake"),
    ("nvmlClocksThrottleReasonSyncBoost", "sync boost"),
)


def load_pynvml() -> ModuleType | None:
    """The real NVML binding, or None when the package itself is missing."""
    try:
        import pynvml
    except ImportError:
        return None
    module: ModuleType = pynvml
    return module


@dataclass(frozen=True)
class _StaticInfo:
    """Fields that never change while the driver is loaded: read once per GPU."""

    name: str
    uuid: str | None
    memory_total: int | None
    power_limit_w: float | None
    mem_clock_max_mhz: int | None
    memory_bus_width_bits: int | None


class NvmlReader:
    """Owns NVML initialisation and reads every GPU in one batch per tick.

    ``status`` is "ok" or one plain line saying why there are no GPU readings (no driver, no
    library, a container without the device nodes), which the pane shows as is.
    """

    def __init__(self, library: ModuleType | Any | None = None, *, read_processes: bool = True):
        # The binding's functions are looked up by name at run time: typed as Any on purpose.
        self._nv: Any = library if library is not None else load_pynvml()
        self._read_processes = read_processes
        self._lock = threading.Lock()
        self._initialised = False
        self._handles: list[Any] = []
        self._static: dict[int, _StaticInfo] = {}
        self._lost: set[int] = set()
        self._procs: dict[int, psutil.Process] = {}
        self._texts: dict[int, tuple[str | None, str]] = {}
        self.driver_version: str | None = None
        self.status = "not started"
        self._start()

    # -- life cycle ---------------------------------------------------------------------------
    def _start(self) -> None:
        nv = self._nv
        if nv is None:
            self.status = "nvidia-ml-py is not installed: pip install nvidia-ml-py"
            return
        try:
            nv.nvmlInit()
        except Exception as exc:  # NVMLError subclasses and OSError from a broken library
            self.status = _init_failure_message(nv, exc)
            return
        self._initialised = True
        try:
            count = nv.nvmlDeviceGetCount()
            self._handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            self.status = f"NVML could not list GPUs: {_error_text(exc)}"
            self._handles = []
            return
        self.driver_version = self.query(nv.nvmlSystemGetDriverVersion)
        if isinstance(self.driver_version, bytes):
            self.driver_version = self.driver_version.decode()
        self.status = "ok" if self._handles else "NVIDIA driver loaded, but it reports no GPUs"

    def close(self) -> None:
        with self._lock:
            if self._initialised and self._nv is not None:
                try:
                    self._nv.nvmlShutdown()
                except Exception:
                    pass  # shutting down a half-broken driver must not raise on exit
            self._initialised = False

    @property
    def gpu_count(self) -> int:
        return len(self._handles)

    # -- the one query function ---------------------------------------------------------------
    def query(self, fn: Callable[..., T], *args: Any, gpu: int | None = None) -> T | None:
        """Call one NVML function; a failure of this field becomes ``None``.

        A "GPU is lost" error marks that GPU so the next reads skip it and the pane says so.
        """
        try:
            return fn(*args)
        except Exception as exc:
            if gpu is not None and _is_gpu_lost(self._nv, exc):
                self._lost.add(gpu)
            return None

    # -- one-off questions (the machine fingerprint, a run's measured VRAM) --------------------
    def inventory(self) -> tuple[tuple[str, int | None], ...]:
        """(name, total memory bytes) of every GPU, from the fields read once per GPU."""
        if not self._initialised:
            return ()
        with self._lock:
            cards = [self._static_info(i, h) for i, h in enumerate(self._handles)]
        return tuple((c.name, c.memory_total) for c in cards)

    def process_memory_bytes(self, pid: int) -> int | None:
        """GPU memory NVML charges to ``pid``, summed over GPUs; None when NVML cannot say.

        Zero is a real answer (the process holds no GPU memory); None means unknown, e.g. no
        driver or a container where NVML does not see our pid.
        """
        if not self._initialised:
            return None
        total, seen_any = 0, False
        with self._lock:
            for i, handle in enumerate(self._handles):
                procs = self.query(self._nv.nvmlDeviceGetComputeRunningProcesses, handle, gpu=i)
                if procs is None:
                    continue
                seen_any = True
                for proc in procs:
                    used = getattr(proc, "usedGpuMemory", None)
                    # NVML reports "not available" as a huge sentinel (e.g. under WDDM or MIG).
                    if int(proc.pid) == pid and isinstance(used, int) and 0 <= used < 1 << 50:
                        total += used
        return total if seen_any else None

    # -- per tick -----------------------------------------------------------------------------
    def read(self, interval_s: float | None = None) -> tuple[GpuStats, ...]:
        """Read every GPU once. PCIe rates come as KB/s from NVML itself."""
        if not self._initialised:
            return ()
        with self._lock:
            gpus = tuple(self._read_one(i, h) for i, h in enumerate(self._handles))
            # Forget processes that left every GPU, so their cache does not grow for ever.
            seen = {p.pid for g in gpus for p in g.processes}
            for pid in set(self._procs) - seen:
                del self._procs[pid]
                self._texts.pop(pid, None)
            return gpus

    def _static_info(self, index: int, handle: Any) -> _StaticInfo:
        info = self._static.get(index)
        if info is None:
            nv = self._nv
            name = self.query(nv.nvmlDeviceGetName, handle, gpu=index) or f"GPU {index}"
            uuid = self.query(nv.nvmlDeviceGetUUID, handle, gpu=index)
            mem = self.query(nv.nvmlDeviceGetMemoryInfo, handle, gpu=index)
            limit_mw = self.query(nv.nvmlDeviceGetEnforcedPowerLimit, handle, gpu=index)
            info = _StaticInfo(
                name=_text(name),
                uuid=_text(uuid) if uuid is not None else None,
                memory_total=int(mem.total) if mem is not None else None,
                power_limit_w=limit_mw / 1000 if limit_mw is not None else None,
                mem_clock_max_mhz=self.query(
                    nv.nvmlDeviceGetMaxClockInfo, handle, nv.NVML_CLOCK_MEM, gpu=index
                ),
                memory_bus_width_bits=self.query(
                    getattr(nv, "nvmlDeviceGetMemoryBusWidth", _unsupported), handle, gpu=index
                ),
            )
            if index not in self._lost:
                self._static[index] = info
        return info

    def _read_one(self, index: int, handle: Any) -> GpuStats:
        nv = self._nv
        static = self._static_info(index, handle)
        if index in self._lost:
            return _lost_gpu(index, static)
        q = self.query
        util = q(nv.nvmlDeviceGetUtilizationRates, handle, gpu=index)
        mem = q(nv.nvmlDeviceGetMemoryInfo, handle, gpu=index)
        power_mw = q(nv.nvmlDeviceGetPowerUsage, handle, gpu=index)
        rx = q(nv.nvmlDeviceGetPcieThroughput, handle, nv.NVML_PCIE_UTIL_RX_BYTES, gpu=index)
        tx = q(nv.nvmlDeviceGetPcieThroughput, handle, nv.NVML_PCIE_UTIL_TX_BYTES, gpu=index)
        reasons = q(nv.nvmlDeviceGetCurrentClocksThrottleReasons, handle, gpu=index)
        processes = self._gpu_processes(index, handle) if self._read_processes else ()
        if index in self._lost:
            return _lost_gpu(index, static)
        return GpuStats(
            index=index,
            name=static.name,
            uuid=static.uuid,
            util_percent=float(util.gpu) if util is not None else None,
            memory_util_percent=float(util.memory) if util is not None else None,
            memory_used=int(mem.used) if mem is not None else None,
            memory_total=int(mem.total) if mem is not None else static.memory_total,
            temperature_c=_float(
                q(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU, gpu=index)
            ),
            power_w=power_mw / 1000 if power_mw is not None else None,
            power_limit_w=static.power_limit_w,
            fan_percent=_float(q(nv.nvmlDeviceGetFanSpeed, handle, gpu=index)),
            sm_clock_mhz=q(nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_SM, gpu=index),
            mem_clock_mhz=q(nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_MEM, gpu=index),
            mem_clock_max_mhz=static.mem_clock_max_mhz,
            memory_bus_width_bits=static.memory_bus_width_bits,
            pcie_rx_bps=rx * 1024.0 if rx is not None else None,
            pcie_tx_bps=tx * 1024.0 if tx is not None else None,
            throttle_reasons=_throttle_names(nv, reasons),
            processes=processes,
        )

    def _gpu_processes(self, index: int, handle: Any) -> tuple[GpuProcess, ...]:
        nv = self._nv
        found: dict[int, GpuProcess] = {}
        for kind, fn_name in (
            ("compute", "nvmlDeviceGetComputeRunningProcesses"),
            ("graphics", "nvmlDeviceGetGraphicsRunningProcesses"),
        ):
            fn = getattr(nv, fn_name, None)
            entries = self.query(fn, handle, gpu=index) if fn is not None else None
            for entry in entries or ():
                pid = int(entry.pid)
                if pid in found:
                    continue
                used = getattr(entry, "usedGpuMemory", None)
                # NVML reports "not available" as a huge sentinel (e.g. under WDDM or MIG).
                used = int(used) if isinstance(used, int) and 0 <= used < 1 << 50 else None
                found[pid] = self._describe_process(pid, index, used, kind)
        return tuple(sorted(found.values(), key=lambda p: -(p.gpu_memory or 0)))

    def _describe_process(self, pid: int, index: int, used: int | None, kind: str) -> GpuProcess:
        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = psutil.Process(pid)
                self._procs[pid] = proc
                self._texts.pop(pid, None)
                proc.cpu_percent(None)  # primes the counter; the next tick has a real figure
                cpu = None
            else:
                cpu = proc.cpu_percent(None)
            rss = _safe(lambda: proc.memory_info().rss)
            texts = self._texts.get(pid)
            if texts is None:
                # Owner and command line do not change under a pid: read them once, not per tick.
                with proc.oneshot():
                    user = _safe(proc.username)
                    cmd = _safe(proc.cmdline)
                    name = _safe(proc.name) or "?"
                texts = self._texts[pid] = (user, " ".join(cmd) if cmd else name)
            user, command = texts
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            # In a container NVML shows host pids that do not exist here.
            self._procs.pop(pid, None)
            self._texts.pop(pid, None)
            user, command, rss, cpu = None, "(not visible from here)", None, None
        except psutil.AccessDenied:
            user, command, rss, cpu = None, "(access denied)", None, None
        return GpuProcess(pid, index, used, kind, user, command, cpu, rss)


def _safe(fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except (psutil.AccessDenied, OSError):
        return None


def _unsupported(*_: Any) -> None:
    raise NotImplementedError


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _lost_gpu(index: int, static: _StaticInfo) -> GpuStats:
    return GpuStats(
        index=index,
        name=static.name,
        uuid=static.uuid,
        util_percent=None,
        memory_util_percent=None,
        memory_used=None,
        memory_total=static.memory_total,
        temperature_c=None,
        power_w=None,
        power_limit_w=static.power_limit_w,
        fan_percent=None,
        sm_clock_mhz=None,
        mem_clock_mhz=None,
        mem_clock_max_mhz=static.mem_clock_max_mhz,
        memory_bus_width_bits=static.memory_bus_width_bits,
        pcie_rx_bps=None,
        pcie_tx_bps=None,
        lost=True,
    )


def _throttle_names(nv: Any, mask: int | None) -> tuple[str, ...]:
    if not mask:
        return ()
    names = []
    for attr, label in _THROTTLE_REASONS:
        bit = getattr(nv, attr, None)
        if bit and mask & bit:
            names.append(label)
    return tuple(names)


def _error_class(nv: Any, name: str) -> type | None:
    cls = getattr(nv, name, None)
    return cls if isinstance(cls, type) else None


def _is_gpu_lost(nv: Any, exc: BaseException) -> bool:
    lost = _error_class(nv, "NVMLError_GpuIsLost")
    return lost is not None and isinstance(exc, lost)


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _init_failure_message(nv: Any, exc: BaseException) -> str:
    """Why NVML would not start, in words that say what to do."""
    checks = (
        ("NVMLError_LibraryNotFound", _no_library_message()),
        (
            "NVMLError_DriverNotLoaded",
            "NVIDIA driver not loaded: no GPU here, or load it (nvidia-smi should work first)",
        ),
        (
            "NVMLError_NoPermission",
            "no permission to read the NVIDIA driver: add your user to the video group",
        ),
    )
    for name, message in checks:
        cls = _error_class(nv, name)
        if cls is not None and isinstance(exc, cls):
            return message
    return f"NVML did not start: {_error_text(exc)}"


def _no_library_message() -> str:
    if os.path.exists("/proc/sys/fs/binfmt_misc/WSLInterop") or "WSL_DISTRO_NAME" in os.environ:
        return (
            "no NVIDIA GPU visible (WSL2: install the Windows NVIDIA driver; libnvidia-ml "
            "comes from /usr/lib/wsl/lib)"
        )
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        return (
            "no NVIDIA GPU visible (a container: run it with --gpus all and the NVIDIA "
            "container toolkit)"
        )
    return "no NVIDIA driver found (libnvidia-ml.so is missing): this machine shows CPU only"
