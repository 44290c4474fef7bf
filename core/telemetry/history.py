"""Ring buffers of the last few minutes, for the history graphs."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from rigdeck.core.telemetry.snapshot import Snapshot


class History:
    """Named series of floats, each at most ``capacity`` points (one per tick)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(int(capacity), 2)
        self._series: dict[str, deque[float]] = {}

    def push(self, name: str, value: float | None) -> None:
        series = self._series.setdefault(name, deque(maxlen=self.capacity))
        # A missing reading keeps the graph's time axis honest: it draws as zero.
        series.append(float(value) if value is not None else 0.0)

    def series(self, name: str) -> list[float]:
        return list(self._series.get(name, ()))

    def names(self) -> Iterator[str]:
        return iter(self._series)

    def record(self, snap: Snapshot) -> None:
        self.push("cpu", snap.cpu.percent)
        self.push("ram", snap.memory.percent)
        for gpu in snap.gpus:
            self.push(f"gpu{gpu.index}.util", gpu.util_percent)
            mem_pct = (
                100.0 * gpu.memory_used / gpu.memory_total
                if gpu.memory_used is not None and gpu.memory_total
                else None
            )
            self.push(f"gpu{gpu.index}.mem", mem_pct)
            self.push(f"gpu{gpu.index}.power", gpu.power_w)
