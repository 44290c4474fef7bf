"""What this machine costs per hour, busy and idle, and what a run's energy cost.

Power comes from three places, best first: the GPUs' own readings in a telemetry Snapshot (NVML
opens only in telemetry), the CPU package's RAPL energy counters where Linux exposes and lets us
read them, and the configured ``system_watts`` for the rest. Component watts are divided by the
PSU efficiency to get watts at the wall, which is what the tariff charges.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from rigdeck.core.config import EconomicsSettings
from rigdeck.core.economics.figures import (
    EconomicsError,
    Figure,
    Source,
    combine,
    latest,
    now,
    weakest,
)
from rigdeck.core.telemetry.snapshot import Snapshot

POWERCAP = Path("/sys/class/powercap")
HOURS_PER_MONTH = 730.0  # 365 * 24 / 12
_J_PER_KWH = 3.6e6


def setting(settings: EconomicsSettings, name: str) -> Figure:
    """A config value as a Figure: ``user`` when it differs from the default, else ``default``."""
    value = float(getattr(settings, name))
    default = next(f.default for f in fields(EconomicsSettings) if f.name == name)
    source: Source = "default" if value == default else "user"
    return Figure(value, source)


# --------------------------------------------------------------------------------------------
# Readings


def gpu_watts(snap: Snapshot) -> Figure:
    """The GPUs' power draw now, summed; a card without a reading counts at its power limit.

    A lost GPU draws nothing we can know of and is left out. No GPU: 0 W, measured.
    """
    at = _parse_at(snap.taken_at)
    measured = 0.0
    guessed = 0.0
    guessed_low = 0.0
    missing = 0
    for gpu in snap.gpus:
        if gpu.lost:
            continue
        if gpu.power_w is not None:
            measured += gpu.power_w
        elif gpu.power_limit_w is not None:
            # Between idle (about a tenth of the limit on current cards) and the limit itself.
            guessed += gpu.power_limit_w
            guessed_low += 0.1 * gpu.power_limit_w
            missing += 1
        else:
            missing += 1
    if missing == 0:
        return Figure(measured, "measured", at, note="" if snap.gpus else "no GPU")
    if guessed == 0.0:
        return Figure(None, "default", at, note="a GPU reports no power draw and no limit")
    return Figure(
        measured + guessed,
        "default",
        at,
        low=measured + guessed_low,
        high=measured + guessed,
        note="a GPU reports no power draw: counted at its power limit",
    )


@dataclass(frozen=True)
class RaplReading:
    monotonic: float
    energy_uj: tuple[tuple[str, int, int], ...]
    """(zone, energy counter µJ, counter range µJ) per CPU package."""


class CpuPackagePower:
    """CPU package power from Linux powercap (RAPL) energy counters: two reads, delta over time.

    The counters are often readable by root only; then ``read`` returns None and callers fall
    back to the configured watts. Only top-level ``package-*`` zones are summed: subzones (cores,
    DRAM) are inside them, and ``psys`` covers the whole platform and would count them twice.
    """

    def __init__(
        self, root: Path = POWERCAP, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.root = root
        self._clock = clock
        self._last: RaplReading | None = None

    def zones(self) -> list[Path]:
        try:
            candidates = sorted(self.root.glob("intel-rapl:*"))
        except OSError:
            return []
        out = []
        for zone in candidates:
            if zone.name.count(":") != 1:
                continue  # a subzone such as intel-rapl:0:0
            try:
                name = (zone / "name").read_text(encoding="ascii").strip()
            except OSError:
                name = "package"
            if name.startswith("package"):
                out.append(zone)
        return out

    def read(self) -> RaplReading | None:
        counters = []
        for zone in self.zones():
            try:
                energy = int((zone / "energy_uj").read_text(encoding="ascii"))
            except (OSError, ValueError):
                return None  # one unreadable package makes the sum meaningless
            try:
                span = int((zone / "max_energy_range_uj").read_text(encoding="ascii"))
            except (OSError, ValueError):
                span = 0
            counters.append((zone.name, energy, span))
        if not counters:
            return None
        return RaplReading(self._clock(), tuple(counters))

    def watts(self) -> float | None:
        """Watts since the previous call (None on the first one or when unreadable)."""
        reading = self.read()
        previous, self._last = self._last, reading
        if reading is None or previous is None:
            return None
        return watts_between(previous, reading)

    def measure(
        self, interval_s: float = 0.25, *, sleep: Callable[[float], None] = time.sleep
    ) -> float | None:
        """One blocking measurement over ``interval_s`` (for a CLI that has no earlier read)."""
        first = self.read()
        if first is None:
            return None
        sleep(interval_s)
        second = self.read()
        return None if second is None else watts_between(first, second)


def watts_between(a: RaplReading, b: RaplReading) -> float | None:
    """Mean package watts between two readings, across a counter wrap; None if unusable."""
    dt = b.monotonic - a.monotonic
    if dt <= 0:
        return None
    before = {zone: (energy, span) for zone, energy, span in a.energy_uj}
    joules = 0.0
    for zone, energy, span in b.energy_uj:
        if zone not in before:
            return None
        delta = energy - before[zone][0]
        if delta < 0:
            if span <= 0:
                return None
            delta += span  # the counter wrapped once (it wraps every few minutes at most)
        joules += delta / 1e6
    return joules / dt


def rest_watts(cpu_package_w: float | None, settings: EconomicsSettings) -> Figure:
    """The system besides the GPUs: measured CPU package power, else the configured watts.

    RAPL sees the CPU package only (not board, RAM or disks), so a measured value is a floor;
    the configured ``system_watts`` (which covers them) is the top of its range.
    """
    configured = setting(settings, "system_watts")
    if cpu_package_w is None:
        return configured
    return Figure(
        cpu_package_w,
        "measured",
        now(),
        low=cpu_package_w,
        high=max(cpu_package_w, settings.system_watts),
        note="CPU package (RAPL); board, RAM and disks not included",
    )


def wall_watts(gpu: Figure, rest: Figure, settings: EconomicsSettings) -> Figure:
    """Component watts at the wall: their sum divided by the PSU efficiency."""
    eff = settings.psu_efficiency
    if gpu.value is None or rest.value is None:
        return combine(None, gpu, rest, note="power unknown")
    glo, ghi = gpu.range
    rlo, rhi = rest.range
    assert glo is not None and ghi is not None and rlo is not None and rhi is not None
    return combine(
        (gpu.value + rest.value) / eff, gpu, rest, low=(glo + rlo) / eff, high=(ghi + rhi) / eff
    )


# --------------------------------------------------------------------------------------------
# Rates


@dataclass(frozen=True)
class LocalRate:
    """This machine per hour. ``usd_per_hour`` = electricity now + amortised hardware.

    Money is in ``currency`` (the tariff's); the JSON keys keep the ``usd`` name the cloud side
    uses, and the currency travels beside them.
    """

    watts: Figure
    gpu_watts: Figure
    rest_watts: Figure
    price_per_kwh: Figure
    energy_per_hour: Figure
    hardware_per_hour: Figure
    usd_per_hour: Figure
    idle_watts: Figure
    idle_usd_per_hour: Figure
    currency: str


def hardware_per_hour(settings: EconomicsSettings) -> Figure:
    """The machine's price spread over ``amortise_months`` of calendar hours (0 when unset).

    Calendar hours, not hours of use: hardware loses value whether it runs or not.
    """
    price = setting(settings, "hardware_price")
    if not settings.hardware_price:
        return Figure(0.0, price.source, note="hardware_price not set")
    per_hour = settings.hardware_price / (settings.amortise_months * HOURS_PER_MONTH)
    return Figure(
        per_hour, "user", note=f"spread over {settings.amortise_months} months of calendar hours"
    )


def idle_watts(observed_wall_watts: Iterable[float], settings: EconomicsSettings) -> Figure:
    """What the box draws doing nothing: the lowest wall watts seen, else the configured ones.

    The configured fallback is ``system_watts`` at the wall (GPUs idle near zero next to it).
    """
    seen = [w for w in observed_wall_watts if w > 0]
    if seen:
        return Figure(min(seen), "measured", now(), note="lowest reading seen")
    base = setting(settings, "system_watts")
    assert base.value is not None
    return Figure(
        base.value / settings.psu_efficiency, base.source, note="system_watts at the wall"
    )


def local_rate(
    snap: Snapshot,
    settings: EconomicsSettings,
    *,
    cpu_package_w: float | None = None,
    observed_wall_watts: Iterable[float] = (),
) -> LocalRate:
    """This machine's cost per hour now, from one Snapshot and (optionally) a RAPL reading.

    ``observed_wall_watts``: earlier wall readings (e.g. the telemetry history), whose lowest
    is the idle draw. ``cpu_package_w``: `CpuPackagePower.watts()` (None: not exposed).
    """
    gpu = gpu_watts(snap)
    rest = rest_watts(cpu_package_w, settings)
    wall = wall_watts(gpu, rest, settings)
    tariff = setting(settings, "price_per_kwh")
    energy = per_hour_cost(wall, tariff)
    hardware = hardware_per_hour(settings)
    # The reading now counts as an observation too when it was measured.
    seen = [*observed_wall_watts]
    if wall.source == "measured" and wall.value:
        seen.append(wall.value)
    idle_w = idle_watts(seen, settings)
    idle = per_hour_cost(idle_w, tariff)
    # An unset hardware price adds nothing and should not make the total read as a default.
    total = _plus(energy, hardware) if hardware.value else energy
    return LocalRate(
        watts=wall,
        gpu_watts=gpu,
        rest_watts=rest,
        price_per_kwh=tariff,
        energy_per_hour=energy,
        hardware_per_hour=hardware,
        usd_per_hour=total,
        idle_watts=idle_w,
        idle_usd_per_hour=idle,
        currency=settings.currency,
    )


def per_hour_cost(watts: Figure, tariff: Figure) -> Figure:
    """Money per hour for a steady draw: kW times the tariff."""
    if watts.value is None or tariff.value is None:
        return combine(None, watts, tariff)
    lo, hi = watts.range
    assert lo is not None and hi is not None
    k = tariff.value / 1000.0
    return combine(watts.value * k, watts, tariff, low=lo * k, high=hi * k, note=watts.note)


def _plus(a: Figure, b: Figure) -> Figure:
    if a.value is None or b.value is None:
        return combine(None, a, b)
    alo, ahi = a.range
    blo, bhi = b.range
    assert alo is not None and ahi is not None and blo is not None and bhi is not None
    return combine(a.value + b.value, a, b, low=alo + blo, high=ahi + bhi, note=a.note)


# --------------------------------------------------------------------------------------------
# Energy over a run


def energy_joules(samples: Sequence[tuple[float, float]]) -> float:
    """Trapezoid integral of (monotonic seconds, watts) pairs: uneven spacing is fine.

    Samples must be in time order (a sampler's are); one sample or none is no time at all.
    """
    total = 0.0
    for (t0, w0), (t1, w1) in pairwise(samples):
        if t1 < t0:
            raise EconomicsError(
                f"power samples out of order at t={t1:.3f} s (after {t0:.3f} s): "
                "pass them in the order they were taken"
            )
        total += (t1 - t0) * (w0 + w1) / 2.0
    return total


def energy_kwh(samples: Sequence[tuple[float, float]]) -> float:
    return energy_joules(samples) / _J_PER_KWH


@dataclass(frozen=True)
class RunEnergy:
    """A run's energy at the wall and its electricity cost."""

    seconds: float
    kwh: Figure
    cost: Figure
    mean_watts: Figure


def run_energy(
    samples: Sequence[tuple[float, float]],
    settings: EconomicsSettings,
    *,
    source: Source = "measured",
    at: datetime | None = None,
) -> RunEnergy:
    """A run's kWh and cost from component-watt samples (GPU + rest, as `power_sample` gives).

    ``source`` says how the samples were obtained: ``measured`` when every part was read,
    ``user``/``default`` when the rest of the system was the configured watts.
    """
    seconds = samples[-1][0] - samples[0][0] if len(samples) > 1 else 0.0
    kwh = energy_kwh(samples) / settings.psu_efficiency
    tariff = setting(settings, "price_per_kwh")
    assert tariff.value is not None
    energy = Figure(kwh, source, at or now(), note="trapezoid over the run's power samples")
    cost = combine(kwh * tariff.value, energy, tariff)
    mean = Figure(kwh * _J_PER_KWH / seconds if seconds > 0 else None, source, energy.at)
    return RunEnergy(seconds, energy, cost, mean)


def power_sample(snap: Snapshot, rest: Figure) -> tuple[float, float] | None:
    """(monotonic, component watts) for one Snapshot: what `EnergyMeter` collects."""
    gpu = gpu_watts(snap)
    if gpu.value is None or rest.value is None:
        return None
    return snap.monotonic, gpu.value + rest.value


class EnergyMeter:
    """Collects power samples over a local run; ``result`` integrates them.

    Feed it each telemetry Snapshot and the rest-of-system watts at that moment (a RAPL reading
    or the configured watts); the result is labelled with the weakest source seen.
    """

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._sources: list[Source] = []
        self._last_at: datetime | None = None

    def add(self, snap: Snapshot, rest: Figure) -> None:
        sample = power_sample(snap, rest)
        if sample is None:
            return
        if self.samples and sample[0] < self.samples[-1][0]:
            return  # a stale snapshot delivered late: keep time order
        self.samples.append(sample)
        self._sources.extend((gpu_watts(snap).source, rest.source))
        self._last_at = latest(self._last_at, _parse_at(snap.taken_at))

    def result(self, settings: EconomicsSettings) -> RunEnergy:
        source = weakest(*self._sources) if self._sources else "measured"
        return run_energy(self.samples, settings, source=source, at=self._last_at)


def _parse_at(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def local_rate_now(
    settings: EconomicsSettings,
    *,
    rapl: CpuPackagePower | None = None,
    interval_s: float = 0.25,
) -> LocalRate:
    """One reading of this machine and its cost per hour (blocking, about ``interval_s``).

    For the CLI; the pane already has Snapshots and a `CpuPackagePower` it calls each tick.
    """
    from rigdeck.core.telemetry.sampler import TelemetrySampler

    sampler = TelemetrySampler(watched=[])
    try:
        cpu_w = (rapl or CpuPackagePower()).measure(interval_s)
        snap = sampler.sample()
    finally:
        sampler.close()
    return local_rate(snap, settings, cpu_package_w=cpu_w)
