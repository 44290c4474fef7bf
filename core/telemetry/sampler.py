"""Turns psutil and NVML readings into one Snapshot per tick.

Rates (disk, network) need the previous counters, so a sampler is a small stateful object; it is
called from one worker thread at a time.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psutil

from rigdeck.core.telemetry.diagnosis import diagnose
from rigdeck.core.telemetry.nvml import NvmlReader
from rigdeck.core.telemetry.snapshot import (
    CpuStats,
    DiskStats,
    GpuProcess,
    IoRates,
    MemoryStats,
    NetRates,
    Snapshot,
)


def default_watched_paths(extra_dirs: Iterable[Path] = ()) -> list[tuple[str, Path]]:
    """The places whose free space matters to ML work: home, the HF cache, model folders."""
    home = Path.home()
    hf_home = Path(os.environ.get("HF_HOME", home / ".cache" / "huggingface"))
    hf_cache = Path(os.environ.get("HF_HUB_CACHE", hf_home / "hub"))
    paths = [("home", home), ("HF cache", hf_cache)]
    paths += [(f"models {d}", Path(d)) for d in extra_dirs]
    return paths


def _existing_ancestor(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class TelemetrySampler:
    """Reads the machine. ``sample()`` is the only per-tick call."""

    def __init__(
        self,
        *,
        nvml: NvmlReader | None = None,
        watched: Iterable[tuple[str, Path]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nvml = nvml if nvml is not None else NvmlReader()
        self._watched = list(watched) if watched is not None else default_watched_paths()
        self._clock = clock
        self._hostname = socket.gethostname()
        self._cpu_model = _cpu_model()
        self._physical = psutil.cpu_count(logical=False)
        self._prev_time: float | None = None
        self._prev_disk: tuple[int, int] | None = None
        self._prev_net: tuple[int, int] | None = None
        self._proc_cache: dict[int, psutil.Process] = {}
        psutil.cpu_percent(None, percpu=True)  # primes psutil's counters

    def close(self) -> None:
        self.nvml.close()

    def sample(self, *, host_processes: int = 0) -> Snapshot:
        """One reading; ``host_processes`` > 0 adds the largest host processes by memory."""
        now = self._clock()
        elapsed = now - self._prev_time if self._prev_time is not None else None
        cpu = self._cpu()
        memory = self._memory()
        disks = self._disks()
        disk_io = self._disk_io(elapsed)
        network = self._network(elapsed)
        gpus = self.nvml.read()
        gpu_status = self.nvml.status
        if gpus and all(g.lost for g in gpus):
            gpu_status = "every GPU fell off the bus (GPU is lost): check dmesg, a reboot may help"
        self._prev_time = now
        snapshot = Snapshot(
            taken_at=datetime.now(UTC).isoformat(timespec="seconds"),
            monotonic=now,
            hostname=self._hostname,
            uptime_s=max(time.time() - psutil.boot_time(), 0.0),
            cpu=cpu,
            memory=memory,
            disks=disks,
            disk_io=disk_io,
            network=network,
            gpus=gpus,
            gpu_status=gpu_status,
            nvidia_driver=self.nvml.driver_version,
            host_processes=self._host_processes(host_processes) if host_processes else (),
        )
        return _with_diagnosis(snapshot)

    def _host_processes(self, limit: int) -> tuple[GpuProcess, ...]:
        rows = []
        seen = set()
        for proc in psutil.process_iter(["pid", "username", "name", "cmdline", "memory_info"]):
            info = proc.info
            seen.add(info["pid"])
            cached = self._proc_cache.setdefault(info["pid"], proc)
            try:
                cpu = cached.cpu_percent(None)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                cpu = None
            mem = info.get("memory_info")
            cmd = info.get("cmdline") or []
            rows.append(
                GpuProcess(
                    pid=info["pid"],
                    gpu_index=None,
                    gpu_memory=None,
                    kind="host",
                    user=info.get("username"),
                    command=" ".join(cmd) if cmd else (info.get("name") or "?"),
                    cpu_percent=cpu,
                    rss=mem.rss if mem else None,
                )
            )
        for pid in set(self._proc_cache) - seen:
            del self._proc_cache[pid]
        rows.sort(key=lambda p: -(p.rss or 0))
        return tuple(rows[:limit])

    def _cpu(self) -> CpuStats:
        per_core = tuple(psutil.cpu_percent(None, percpu=True))
        freq = None
        try:
            freq = psutil.cpu_freq()
        except (OSError, NotImplementedError):
            pass
        try:
            load = psutil.getloadavg()
        except (OSError, AttributeError):
            load = None
        return CpuStats(
            percent=sum(per_core) / len(per_core) if per_core else 0.0,
            per_core=per_core,
            logical_cores=len(per_core),
            physical_cores=self._physical,
            freq_mhz=freq.current if freq else None,
            freq_max_mhz=(freq.max or None) if freq else None,
            load_avg=tuple(load) if load else None,  # type: ignore[arg-type]
            model=self._cpu_model,
        )

    @staticmethod
    def _memory() -> MemoryStats:
        vm = psutil.virtual_memory()
        sw = psutil.swap_memory()
        return MemoryStats(
            total=vm.total,
            available=vm.available,
            used=vm.total - vm.available,
            percent=vm.percent,
            swap_total=sw.total,
            swap_used=sw.used,
            swap_percent=sw.percent,
        )

    def _disks(self) -> tuple[DiskStats, ...]:
        by_device: dict[int, tuple[str, list[str]]] = {}
        for label, path in self._watched:
            existing = _existing_ancestor(Path(path).expanduser())
            if existing is None:
                continue
            try:
                dev = existing.stat().st_dev
            except OSError:
                continue
            if dev not in by_device:
                by_device[dev] = (str(existing), [])
            by_device[dev][1].append(label)
        disks = []
        for path, labels in by_device.values():
            try:
                usage = psutil.disk_usage(path)
            except OSError:
                continue
            disks.append(
                DiskStats(
                    mount=_mount_point(path),
                    labels=tuple(labels),
                    total=usage.total,
                    used=usage.used,
                    free=usage.free,
                    percent=usage.percent,
                )
            )
        return tuple(disks)

    def _disk_io(self, elapsed: float | None) -> IoRates:
        try:
            counters = psutil.disk_io_counters()
        except (OSError, RuntimeError):
            counters = None
        if counters is None:
            return IoRates()
        current = (counters.read_bytes, counters.write_bytes)
        previous, self._prev_disk = self._prev_disk, current
        return IoRates(*_rates(previous, current, elapsed))

    def _network(self, elapsed: float | None) -> NetRates:
        try:
            per_nic = psutil.net_io_counters(pernic=True)
        except OSError:
            return NetRates()
        rx = sum(c.bytes_recv for nic, c in per_nic.items() if nic != "lo")
        tx = sum(c.bytes_sent for nic, c in per_nic.items() if nic != "lo")
        previous, self._prev_net = self._prev_net, (rx, tx)
        return NetRates(*_rates(previous, (rx, tx), elapsed))


def _rates(
    previous: tuple[int, int] | None, current: tuple[int, int], elapsed: float | None
) -> tuple[float | None, float | None]:
    if previous is None or not elapsed or elapsed <= 0:
        return None, None
    # Counters can wrap or reset (a NIC that went away); a negative rate is no rate.
    return tuple(  # type: ignore[return-value]
        max(c - p, 0) / elapsed for p, c in zip(previous, current, strict=True)
    )


def _mount_point(path: str) -> str:
    p = Path(path).resolve()
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p)


def _with_diagnosis(snapshot: Snapshot) -> Snapshot:
    return replace(snapshot, diagnosis=diagnose(snapshot))
