"""Meter a local run's energy while it runs, for faces that have no telemetry loop (the CLI).

A daemon thread reads the machine every ``interval_s`` (GPU watts through the telemetry sampler,
CPU package watts through RAPL where readable, else the configured watts) into an `EnergyMeter`;
``stop`` takes a last reading, so even a run shorter than one interval has two samples.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from rigdeck.core.config import EconomicsSettings
from rigdeck.core.economics.power import CpuPackagePower, EnergyMeter, RunEnergy, rest_watts
from rigdeck.core.telemetry.snapshot import Snapshot

DEFAULT_INTERVAL_S = 1.0


class Sampler(Protocol):
    def sample(self) -> Snapshot: ...

    def close(self) -> None: ...


def _default_sampler() -> Sampler:
    from rigdeck.core.telemetry.sampler import TelemetrySampler

    sampler: Sampler = TelemetrySampler(watched=[])
    return sampler


class RunMeter:
    """``with RunMeter(settings) as meter: ...`` then ``meter.result()``: the run's energy."""

    def __init__(
        self,
        settings: EconomicsSettings,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        sampler_factory: Callable[[], Sampler] = _default_sampler,
        rapl: CpuPackagePower | None = None,
    ) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self._factory = sampler_factory
        self._rapl = rapl or CpuPackagePower()
        self._meter = EnergyMeter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._sampler: Sampler | None = None
        self._result: RunEnergy | None = None

    def start(self) -> RunMeter:
        self._sampler = self._factory()
        self._rapl.watts()  # primes the counter: the next call measures since now
        self._read()
        self._thread = threading.Thread(target=self._loop, name="rigdeck-run-meter", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        if self._sampler is None:
            return
        try:
            snap = self._sampler.sample()
        except Exception:  # a reading that fails costs one sample, never the run
            return
        rest = rest_watts(self._rapl.watts(), self.settings)
        with self._lock:
            self._meter.add(snap, rest)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._read()

    def stop(self) -> RunEnergy:
        """Stop metering (idempotent) and integrate what was read."""
        if self._result is not None:
            return self._result
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._read()
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
        with self._lock:
            self._result = self._meter.result(self.settings)
        return self._result

    def result(self) -> RunEnergy:
        return self.stop()

    @property
    def samples(self) -> int:
        with self._lock:
            return len(self._meter.samples)

    def __enter__(self) -> RunMeter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
