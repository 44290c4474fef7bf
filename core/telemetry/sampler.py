"""Turns psutil and NVML readings into one Snapshot per tick.

Rates (disk, network) need the previous counters, so a sampler is a small stateful object; it is
called from one worker thread at a time.
"""

from __future__ import annotations

import heapq
import os
import platform
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from rigdeck.core.telemetry.diagnosis import diagnose
from rigdeck.core.telemetry.nvml import NvmlReader
from rigdeck.core.telemetry.procfs import cpu_clock, resident_sizes
from rigdeck.core.telemetry.snapshot import (
    GPU_PENDING,
    CpuStats,
    DiskStats,
    GpuProcess,
    GpuStats,
    IoRates,
    MemoryStats,
    NetRates,
    Snapshot,
)

DISK_TTL_S = 5.0


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


@dataclass(frozen=True)
class _Described:
    """What the last scan learnt of one shown process."""

    start: float  # tells a reused pid apart
    user: str | None
    command: str
    cpu_s: float
    at: float


class TelemetrySampler:
    """Reads the machine. ``sample()`` is the only per-tick call.

    Building one is cheap: NVML starts on the first ``sample()`` (or ``nvml`` access), so an app
    can take a host-only ``first_reading()`` on its event loop and leave NVML to a worker.
    """

    def __init__(
        self,
        *,
        nvml: NvmlReader | None = None,
        watched: Iterable[tuple[str, Path]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nvml = nvml
        self._nvml_lock = threading.Lock()
        self._watched = list(watched) if watched is not None else default_watched_paths()
        self._clock = clock
        self._hostname = socket.gethostname()
        self._cpu_model = _cpu_model()
        self._physical = psutil.cpu_count(logical=False)
        self._prev_time: float | None = None
        self._prev_disk: tuple[int, int] | None = None
        self._prev_net: tuple[int, int] | None = None
        # Our own baseline rather than psutil.cpu_percent's, which psutil keeps per thread: a
        # reading from a fresh worker thread would otherwise measure an empty interval.
        self._prev_cpu = psutil.cpu_times(percpu=True)
        # A command line is read once per process, not once per scan.
        self._described: dict[int, _Described] = {}
        self._users: dict[int, str | None] = {}
        self._disks_cache: tuple[float, tuple[DiskStats, ...]] | None = None

    @property
    def nvml(self) -> NvmlReader:
        with self._nvml_lock:
            if self._nvml is None:
                self._nvml = NvmlReader()
            return self._nvml

    def close(self) -> None:
        with self._nvml_lock:
            if self._nvml is not None:
                self._nvml.close()

    def first_reading(self) -> Snapshot:
        """A host-only reading cheap enough for the event loop: no NVML, no process scan.

        CPU% covers the time since this sampler was built; rates need a second reading.
        """
        return self._reading(gpus=(), gpu_status=GPU_PENDING, nvidia_driver=None, host_processes=0)

    def sample(self, *, host_processes: int = 0) -> Snapshot:
        """One reading; ``host_processes`` > 0 adds the largest host processes by memory when
        no GPU process is there to show."""
        nvml = self.nvml
        gpus = nvml.read()
        gpu_status = nvml.status
        if gpus and all(g.lost for g in gpus):
            gpu_status = "every GPU fell off the bus (GPU is lost): check dmesg, a reboot may help"
        if any(g.processes for g in gpus):
            host_processes = 0  # the pane lists GPU processes then; a host scan would be unseen
        return self._reading(
            gpus=gpus,
            gpu_status=gpu_status,
            nvidia_driver=nvml.driver_version,
            host_processes=host_processes,
        )

    def _reading(
        self,
        *,
        gpus: tuple[GpuStats, ...],
        gpu_status: str,
        nvidia_driver: str | None,
        host_processes: int,
    ) -> Snapshot:
        now = self._clock()
        elapsed = now - self._prev_time if self._prev_time is not None else None
        cpu = self._cpu()
        memory = self._memory()
        disks = self._disks()
        disk_io = self._disk_io(elapsed)
        network = self._network(elapsed)
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
            nvidia_driver=nvidia_driver,
            host_processes=self._host_processes(host_processes) if host_processes else (),
        )
        return _with_diagnosis(snapshot)

    def _host_processes(self, limit: int) -> tuple[GpuProcess, ...]:
        # Only the resident size of every process (one small read each); who owns it, its
        # command line and CPU% are read for the few that are shown.
        now = self._clock()
        described: dict[int, _Described] = {}
        rows = []
        for rss, pid in heapq.nlargest(limit, resident_sizes()):
            clock = cpu_clock(pid)
            if clock is None:
                continue  # exited since the sizes were read
            start, cpu_s = clock
            known = self._described.get(pid)
            cpu: float | None = None
            if known is None or known.start != start:
                try:
                    user, command = self._describe(psutil.Process(pid))
                except psutil.Error:
                    continue
            else:
                user, command = known.user, known.command
                if now > known.at:
                    # % of one core since the last scan, as top counts it.
                    cpu = max(cpu_s - known.cpu_s, 0.0) / (now - known.at) * 100
            described[pid] = _Described(start, user, command, cpu_s, now)
            rows.append(
                GpuProcess(
                    pid=pid,
                    gpu_index=None,
                    gpu_memory=None,
                    kind="host",
                    user=user,
                    command=command,
                    cpu_percent=cpu,
                    rss=rss,
                )
            )
        self._described = described
        return tuple(rows)

    def _describe(self, proc: psutil.Process) -> tuple[str | None, str]:
        """(user, command line) of one process; what cannot be read is None or its name."""
        with proc.oneshot():
            try:
                uid: int | None = proc.uids().real
            except (psutil.Error, AttributeError):  # no uids on Windows
                uid = None
            try:
                cmd: Sequence[str] = proc.cmdline()
            except psutil.Error:
                cmd = ()
            try:
                name = proc.name()
            except psutil.Error:
                name = "?"
        if uid is None:
            try:
                user = proc.username()
            except psutil.Error:
                user = None
        else:
            if uid not in self._users:
                self._users[uid] = _user_name(uid)
            user = self._users[uid]
        return user, " ".join(cmd) if cmd else (name or "?")

    def _cpu(self) -> CpuStats:
        times = psutil.cpu_times(percpu=True)
        per_core = tuple(_busy_percent(a, b) for a, b in zip(self._prev_cpu, times, strict=False))
        self._prev_cpu = times
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
            load_avg=tuple(load) if load else None,
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
        # Free space moves slowly next to a 1 s tick; a few statfs and mount-point walks per
        # tick would be a noticeable share of an idle reading.
        now = self._clock()
        if self._disks_cache is not None and now - self._disks_cache[0] < DISK_TTL_S:
            return self._disks_cache[1]
        disks = self._read_disks()
        self._disks_cache = (now, disks)
        return disks

    def _read_disks(self) -> tuple[DiskStats, ...]:
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
        for mount_path, labels in by_device.values():
            try:
                usage = psutil.disk_usage(mount_path)
            except OSError:
                continue
            disks.append(
                DiskStats(
                    mount=_mount_point(mount_path),
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


def _busy_percent(before: Any, after: Any) -> float:
    """CPU busy % of one core between two cpu_times readings, as psutil.cpu_percent counts it:
    idle and iowait are idle; guest time is already inside user time."""
    deltas = {f: max(getattr(after, f) - getattr(before, f), 0.0) for f in after._fields}
    total = sum(deltas.values()) - deltas.get("guest", 0.0) - deltas.get("guest_nice", 0.0)
    if total <= 0:
        return 0.0
    busy = total - deltas["idle"] - deltas.get("iowait", 0.0)
    return float(min(max(100.0 * busy / total, 0.0), 100.0))


def _user_name(uid: int) -> str | None:
    try:
        import pwd
    except ImportError:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


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
