"""This machine's cost per hour and a run's energy: GPU power through the telemetry path (NVML
stand-in), CPU package power from a powercap tree, energy over uneven samples."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rigdeck.core.config import EconomicsSettings
from rigdeck.core.economics.figures import EconomicsError, Figure
from rigdeck.core.economics.power import (
    HOURS_PER_MONTH,
    CpuPackagePower,
    EnergyMeter,
    energy_joules,
    energy_kwh,
    gpu_watts,
    hardware_per_hour,
    idle_watts,
    local_rate,
    local_rate_now,
    rest_watts,
    run_energy,
)
from rigdeck.core.economics.report import local_json
from rigdeck.core.telemetry.nvml import NvmlReader
from rigdeck.core.telemetry.sampler import TelemetrySampler
from tests.support.fake_nvml import FakeGpu, FakeNvml
from tests.support.fixed_snapshot import gpu_box, no_gpu_box


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def sample_with(gpus: list[FakeGpu]):
    sampler = TelemetrySampler(nvml=NvmlReader(FakeNvml(gpus)), watched=[])
    try:
        return sampler.sample()
    finally:
        sampler.close()


# -- energy over a run ---------------------------------------------------------------------


def test_energy_is_the_trapezoid_over_uneven_samples():
    samples = [(0.0, 100.0), (1.0, 100.0), (4.0, 200.0), (4.5, 50.0)]
    # 1 s at 100 W, 3 s ramping 100->200 W, half a second falling 200->50 W.
    joules = 100.0 * 1.0 + (100.0 + 200.0) / 2 * 3.0 + (200.0 + 50.0) / 2 * 0.5
    assert energy_joules(samples) == pytest.approx(joules)
    assert energy_kwh(samples) == pytest.approx(joules / 3.6e6)
    assert energy_joules(samples[:1]) == 0.0 and energy_joules([]) == 0.0


def test_run_energy_is_at_the_wall_and_priced_at_the_tariff():
    settings = EconomicsSettings(price_per_kwh=0.40, psu_efficiency=0.8)
    samples = [(10.0, 400.0), (1810.0, 400.0), (3610.0, 200.0)]  # an hour, 400 W then falling
    run = run_energy(samples, settings)
    dc_kwh = (400.0 * 1800 + 300.0 * 1800) / 3.6e6
    assert run.seconds == 3600.0
    assert run.kwh.value == pytest.approx(dc_kwh / 0.8)
    assert run.cost.value == pytest.approx(dc_kwh / 0.8 * 0.40)
    assert run.mean_watts.value == pytest.approx(350.0 / 0.8)
    assert run.kwh.source == "measured" and run.cost.source == "user"  # the tariff was typed


def test_samples_out_of_order_are_refused_with_where():
    with pytest.raises(EconomicsError, match=r"out of order at t=1\.000"):
        energy_joules([(0.0, 10.0), (2.0, 10.0), (1.0, 10.0)])


def test_energy_meter_collects_snapshots_and_keeps_the_weakest_source():
    base = gpu_box()
    meter = EnergyMeter()
    rest = Figure(50.0, "default")
    for t, watts in ((100.0, 300.0), (101.5, 250.0), (104.0, 250.0)):
        gpus = tuple(replace(g, power_w=watts) for g in base.gpus)
        meter.add(replace(base, monotonic=t, gpus=gpus), rest)
    meter.add(replace(base, monotonic=90.0), rest)  # late and stale: ignored
    settings = EconomicsSettings()
    run = meter.result(settings)
    joules = (350.0 + 300.0) / 2 * 1.5 + 300.0 * 2.5
    assert run.seconds == 4.0
    assert run.kwh.value == pytest.approx(joules / 3.6e6 / settings.psu_efficiency)
    assert run.kwh.source == "default"  # the rest of the system was the configured guess


# -- GPU power through the telemetry path --------------------------------------------------


def test_nvml_power_reading_makes_the_hourly_cost():
    snap = sample_with([FakeGpu(power_mw=215_000, power_limit_mw=320_000)])
    settings = EconomicsSettings(price_per_kwh=0.40, system_watts=60.0, psu_efficiency=0.9)
    rate = local_rate(snap, settings)
    assert rate.gpu_watts.value == pytest.approx(215.0)
    assert rate.gpu_watts.source == "measured"
    wall = (215.0 + 60.0) / 0.9
    assert rate.watts.value == pytest.approx(wall)
    assert rate.usd_per_hour.value == pytest.approx(wall / 1000 * 0.40)
    assert rate.usd_per_hour.source == "user"  # system watts and tariff come from the config
    shown = local_json(rate)
    assert shown["usd_per_hour"]["source"] == "user"
    assert shown["gpu_watts"] == {"value": 215.0, "source": "measured", "at": snap.taken_at}


def test_two_gpus_add_up_and_a_lost_one_draws_nothing_we_know_of():
    snap = sample_with([FakeGpu(power_mw=100_000), FakeGpu(power_mw=150_000), FakeGpu(lost=True)])
    watts = gpu_watts(snap)
    assert watts.value == pytest.approx(250.0) and watts.source == "measured"


def test_gpu_without_a_power_reading_counts_at_its_limit_as_a_range():
    snap = sample_with([FakeGpu(unsupported={"power"}, power_limit_mw=320_000)])
    watts = gpu_watts(snap)
    assert watts.source == "default"
    assert watts.value == pytest.approx(320.0)
    assert watts.low == pytest.approx(32.0) and watts.high == pytest.approx(320.0)
    assert "power limit" in watts.note


def test_no_gpu_is_zero_watts_measured():
    watts = gpu_watts(no_gpu_box())
    assert watts.value == 0.0 and watts.source == "measured" and watts.note == "no GPU"


# -- CPU package power (powercap) ----------------------------------------------------------


def powercap(root: Path, zones: dict[str, tuple[str, int, int]]) -> None:
    for zone, (name, energy, span) in zones.items():
        d = root / zone
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(f"{energy}\n")
        (d / "max_energy_range_uj").write_text(f"{span}\n")


def test_rapl_package_watts_from_two_reads(tmp_path):
    span = 262_143_328_850
    powercap(
        tmp_path,
        {
            "intel-rapl:0": ("package-0", 1_000_000, span),
            "intel-rapl:0:0": ("core", 900_000, span),  # inside the package: not added again
            "intel-rapl:1": ("psys", 5_000_000, span),  # the whole platform: not a package
        },
    )
    clock = Clock()
    rapl = CpuPackagePower(tmp_path, clock=clock)
    assert rapl.watts() is None  # the first read has nothing to compare with
    clock.now += 1.5
    powercap(
        tmp_path,
        {
            "intel-rapl:0": ("package-0", 1_000_000 + 45_000_000, span),
            "intel-rapl:0:0": ("core", 99_000_000, span),
            "intel-rapl:1": ("psys", 999_000_000, span),
        },
    )
    assert rapl.watts() == pytest.approx(30.0)  # 45 J over 1.5 s


def test_rapl_counter_wrap_is_carried_over(tmp_path):
    span = 10_000_000
    powercap(tmp_path, {"intel-rapl:0": ("package-0", span - 1_000_000, span)})
    clock = Clock()
    rapl = CpuPackagePower(tmp_path, clock=clock)
    rapl.watts()
    clock.now += 0.5
    powercap(tmp_path, {"intel-rapl:0": ("package-0", 2_000_000, span)})
    assert rapl.watts() == pytest.approx(3.0 / 0.5)


def test_unreadable_rapl_falls_back_to_configured_watts(tmp_path):
    powercap(tmp_path, {"intel-rapl:0": ("package-0", 1, 10)})
    (tmp_path / "intel-rapl:0" / "energy_uj").unlink()
    (tmp_path / "intel-rapl:0" / "energy_uj").mkdir()  # unreadable even for root
    rapl = CpuPackagePower(tmp_path)
    assert rapl.read() is None and rapl.measure(0.0, sleep=lambda _s: None) is None
    assert CpuPackagePower(tmp_path / "absent").read() is None
    settings = EconomicsSettings(system_watts=95.0)
    rest = rest_watts(rapl.watts(), settings)
    assert rest.value == 95.0 and rest.source == "user"
    assert rest_watts(None, EconomicsSettings()).source == "default"


def test_measured_package_power_is_a_floor_under_the_configured_watts():
    rest = rest_watts(35.0, EconomicsSettings(system_watts=80.0))
    assert (rest.value, rest.low, rest.high, rest.source) == (35.0, 35.0, 80.0, "measured")
    rate = local_rate(no_gpu_box(), EconomicsSettings(psu_efficiency=0.9), cpu_package_w=35.0)
    assert rate.watts.value == pytest.approx(35.0 / 0.9)
    assert rate.watts.high == pytest.approx(80.0 / 0.9)


# -- idle and hardware ---------------------------------------------------------------------


def test_idle_is_the_lowest_wall_reading_seen_else_the_configured_watts():
    settings = EconomicsSettings(system_watts=70.0, psu_efficiency=0.875)
    seen = idle_watts([180.0, 95.0, 120.0], settings)
    assert seen.value == 95.0 and seen.source == "measured"
    configured = idle_watts([], settings)
    assert configured.value == pytest.approx(80.0) and configured.source == "user"
    rate = local_rate(gpu_box(), settings, observed_wall_watts=[95.0, 300.0])
    assert rate.idle_usd_per_hour.value == pytest.approx(95.0 / 1000 * settings.price_per_kwh)


def test_hardware_is_amortised_over_calendar_hours():
    settings = EconomicsSettings(hardware_price=2190.0, amortise_months=36)
    per_hour = hardware_per_hour(settings)
    assert per_hour.value == pytest.approx(2190.0 / (36 * HOURS_PER_MONTH))
    rate = local_rate(no_gpu_box(), settings)
    assert rate.usd_per_hour.value == pytest.approx(
        rate.energy_per_hour.value + per_hour.value  # type: ignore[operator]
    )
    assert hardware_per_hour(EconomicsSettings()).value == 0.0


def test_this_machine_now_without_gpu_or_readable_rapl_uses_the_config(tmp_path):
    settings = EconomicsSettings(system_watts=72.0, psu_efficiency=0.9, price_per_kwh=0.5)
    rate = local_rate_now(settings, rapl=CpuPackagePower(tmp_path / "no-powercap"), interval_s=0)
    assert rate.rest_watts.value == 72.0 and rate.rest_watts.source == "user"
    assert rate.watts.value == pytest.approx(((rate.gpu_watts.value or 0.0) + 72.0) / 0.9)
    shown = local_json(rate)
    assert shown["idle_usd_per_month"]["value"] == pytest.approx(
        shown["idle_usd_per_hour"]["value"] * HOURS_PER_MONTH
    )
