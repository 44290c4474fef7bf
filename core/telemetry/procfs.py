"""Per-process figures for the host process list, as cheaply as the platform allows.

A scan needs the resident size of every process and, for the few shown, CPU time. On Linux each
is one small read under /proc, a fraction of what psutil's per-process objects cost (psutil's
cpu_percent also rereads /proc/stat for every process); elsewhere psutil does it.
"""

from __future__ import annotations

import os

import psutil

_PROC = "/proc"
_HAS_PROC = os.path.exists(f"{_PROC}/self/stat")
_TICKS = os.sysconf("SC_CLK_TCK") if _HAS_PROC else 100


def resident_sizes() -> list[tuple[int, int]]:
    """(resident bytes, pid) of every process this user can see."""
    if _HAS_PROC:
        return _sizes_from_proc()
    sizes = []
    for proc in psutil.process_iter():
        try:
            sizes.append((proc.memory_info().rss, proc.pid))
        except psutil.Error:
            continue
    return sizes


def cpu_clock(pid: int) -> tuple[float, float] | None:
    """(start time, user+system CPU seconds) of one process; None when it is gone.

    The start time tells a reused pid apart: same pid, another start, another process.
    """
    if _HAS_PROC:
        try:
            # The command name may hold spaces and parentheses: fields start after the last ")".
            fields = _read(f"{_PROC}/{pid}/stat").rsplit(b")", 1)[1].split()
            return float(fields[19]), (int(fields[11]) + int(fields[12])) / _TICKS
        except (OSError, ValueError, IndexError):
            return None
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            times = proc.cpu_times()
            return proc.create_time(), times.user + times.system
    except psutil.Error:
        return None


def _sizes_from_proc() -> list[tuple[int, int]]:
    page = os.sysconf("SC_PAGE_SIZE")
    sizes = []
    with os.scandir(_PROC) as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                resident = int(_read(f"{_PROC}/{entry.name}/statm").split()[1])
            except (OSError, ValueError, IndexError):
                continue  # gone since the listing, or not ours to read
            sizes.append((resident * page, int(entry.name)))
    return sizes


def _read(path: str) -> bytes:
    # os.open/os.read: half the cost of open(), which builds a buffered file object per read.
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)
