"""The bottleneck line: what limits ML work on this machine right now, and the numbers why."""

from __future__ import annotations

from rigdeck.core.telemetry.snapshot import Diagnosis, GpuStats, Snapshot
from rigdeck.core.units import format_bytes

# Thresholds a user would agree with: past these, loading one more model or batch will fail
# or crawl (swap, OOM, a full disk that breaks a download halfway).
VRAM_TIGHT = 0.90
RAM_TIGHT = 0.90
SWAP_BUSY = 0.25
CPU_BUSY = 90.0
GPU_BUSY = 90.0
DISK_FREE_MIN = 5 * 1024**3


def _gib(n: int) -> str:
    # GiB everywhere, as the meters and nvidia-smi's MiB: one unit on one screen.
    return f"{n / 1024**3:.1f}"


def _vram_fact(gpu: GpuStats) -> str | None:
    if gpu.memory_used is None or not gpu.memory_total:
        return None
    text = f"VRAM {_gib(gpu.memory_used)}/{_gib(gpu.memory_total)} GiB"
    if gpu.processes:
        top = gpu.processes[0]
        command = top.command.split()[0].rsplit("/", 1)[-1] if top.command else "?"
        text += f" used by pid {top.pid} {command}"
    return text


def diagnose(snap: Snapshot) -> Diagnosis:
    """Rank what is tight; the first tight resource is the headline, the rest are facts."""
    tight: list[tuple[str, str]] = []
    fine: list[str] = []

    for gpu in snap.gpus:
        if gpu.lost:
            tight.append(("vram", f"GPU {gpu.index} {gpu.name} is lost (fell off the bus)"))
            continue
        fact = _vram_fact(gpu)
        if fact is None:
            continue
        used, total = gpu.memory_used, gpu.memory_total
        if used is None or not total:
            continue
        if used / total >= VRAM_TIGHT:
            label = f"GPU {gpu.index} " if len(snap.gpus) > 1 else ""
            tight.append(("vram", label + fact))
    for gpu in snap.gpus:
        # A saturated GPU is not short of memory, but the next job will share it: say so.
        if not gpu.lost and gpu.util_percent is not None and gpu.util_percent >= GPU_BUSY:
            busy = f"GPU {gpu.index} {gpu.util_percent:.0f}% busy"
            if gpu.throttle_reasons:
                busy += f" (throttled: {', '.join(gpu.throttle_reasons)})"
            fine.append(busy)
    if snap.gpus and not any(kind == "vram" for kind, _ in tight):
        free = sum(g.memory_free or 0 for g in snap.gpus)
        fine.append(f"VRAM fine ({format_bytes(free)} free)")

    mem = snap.memory
    ram_frac = mem.used / mem.total if mem.total else 0.0
    if ram_frac >= RAM_TIGHT:
        tight.append(("ram", f"RAM {_gib(mem.used)}/{_gib(mem.total)} GiB used"))
    elif mem.swap_total and mem.swap_used / mem.swap_total >= SWAP_BUSY:
        tight.append(("ram", f"swap {_gib(mem.swap_used)}/{_gib(mem.swap_total)} GiB in use"))
    else:
        fine.append(f"RAM fine ({format_bytes(mem.available)} free)")

    if snap.cpu.percent >= CPU_BUSY:
        tight.append(("cpu", f"CPU {snap.cpu.percent:.0f}% busy on {snap.cpu.logical_cores} cores"))
    else:
        fine.append(f"CPU {snap.cpu.percent:.0f}%")

    for disk in snap.disks:
        if disk.free < DISK_FREE_MIN:
            tight.append(
                (
                    "disk",
                    f"disk {disk.mount} ({', '.join(disk.labels)}) {format_bytes(disk.free)} free",
                )
            )

    if not tight:
        return Diagnosis("none", "Nothing limits ML work right now: " + "; ".join(fine), ())
    limit, headline = tight[0]
    facts = tuple(text for _, text in tight[1:]) + tuple(fine)
    return Diagnosis(limit, "; ".join((headline, *facts)), facts)
