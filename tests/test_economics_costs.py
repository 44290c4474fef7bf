"""A job's cost here and there, "this job here vs on offer X", and the comparison history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rigdeck.core.cloud.provider import GB, Offer
from rigdeck.core.config import EconomicsSettings
from rigdeck.core.economics.compare import (
    SCALE_EXPONENT,
    CloudRunSpeed,
    compare,
    tflops_speedup,
)
from rigdeck.core.economics.costs import (
    CloudUsage,
    cloud_job_cost,
    estimate_cloud_job,
    local_job_cost,
)
from rigdeck.core.economics.figures import EconomicsError, Figure
from rigdeck.core.economics.history import ComparisonHistory
from rigdeck.core.economics.power import local_rate, run_energy
from tests.support.fixed_snapshot import gpu_box

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def offer(**changes: object) -> Offer:
    values: dict[str, object] = {
        "id": 4242,
        "gpu_name": "RTX 4090",
        "num_gpus": 1,
        "gpu_ram_bytes": 24 * 1024**3,
        "dph": 0.40,
        "storage_usd_per_gb_month": 0.15,
        "reliability": 0.99,
        "inet_down_mbps": 800.0,
        "inet_up_mbps": 400.0,
        "tflops": 82.0,
        "dlperf": 90.0,
        "interruptible_min_bid": 0.2,
        "cpu_ram_bytes": 64 * 1024**3,
        "cpu_cores": 16,
        "disk_gb": 200.0,
        "verified": True,
        "rentable": True,
        "location": "SE",
        "read_at": T0,
    }
    values.update(changes)
    return Offer(**values)  # type: ignore[arg-type]


# -- cloud side ----------------------------------------------------------------------------


def test_storage_is_billed_from_creation_not_only_while_running():
    # Created at noon, ran 2 of the 10 hours it existed (the rest stopped or loading).
    usage = CloudUsage(
        running_seconds=2 * 3600,
        dph=0.50,
        storage_dph=0.01,
        created_at=T0,
        ended_at=T0 + timedelta(hours=10),
    )
    cost = cloud_job_cost(usage)
    assert cost.compute.value == pytest.approx(2 * 0.50)
    assert cost.storage.value == pytest.approx(10 * 0.01)
    assert cost.transfer.value == 0.0 and "not priced" in cost.transfer.note
    assert cost.total.value == pytest.approx(1.0 + 0.1)
    assert {cost.total.source, cost.storage.source} == {"ledger"}


def test_a_rental_still_alive_is_billed_up_to_now_and_transfer_where_priced():
    usage = CloudUsage(
        running_seconds=3600,
        dph=1.0,
        storage_dph=0.02,
        created_at=T0,
        transfer_bytes=50 * GB,
        transfer_usd_per_gb=0.01,
    )
    cost = cloud_job_cost(usage, at=T0 + timedelta(hours=3))
    assert cost.storage.value == pytest.approx(3 * 0.02)
    assert cost.transfer.value == pytest.approx(0.50)


def test_times_out_of_order_say_so():
    usage = CloudUsage(0, 1.0, 0.0, created_at=T0, ended_at=T0 - timedelta(minutes=1))
    with pytest.raises(EconomicsError, match="before it was created"):
        cloud_job_cost(usage)


def test_estimate_before_renting_from_the_offer_and_a_ranged_duration():
    o = offer(dph=0.40, storage_usd_per_gb_month=0.15)
    seconds = Figure(7200.0, "measured", low=5400.0, high=9000.0)
    est = estimate_cloud_job(o, seconds, disk_gb=40.0, overhead_s=600.0)
    storage_dph = 0.15 * 40.0 / (30 * 24)
    hours, low_h, high_h = (7200 + 600) / 3600, (5400 + 600) / 3600, (9000 + 600) / 3600
    assert est.compute.value == pytest.approx(0.40 * hours)
    assert est.storage.value == pytest.approx(storage_dph * hours)
    assert est.total.low == pytest.approx((0.40 + storage_dph) * low_h)
    assert est.total.high == pytest.approx((0.40 + storage_dph) * high_h)
    assert est.total.source == "offer" and est.total.at == T0


# -- local side ----------------------------------------------------------------------------


def test_local_job_cost_from_measured_energy_and_hardware_share():
    settings = EconomicsSettings(price_per_kwh=0.25, hardware_price=3650.0, amortise_months=12)
    energy = run_energy([(0.0, 360.0), (7200.0, 360.0)], settings)
    cost = local_job_cost(energy, settings)
    kwh = 360.0 * 2 / 1000 / settings.psu_efficiency
    assert cost.compute.value == pytest.approx(kwh * 0.25)
    assert cost.hardware.value == pytest.approx(3650.0 / (12 * 730.0) * 2)
    assert cost.total.value == pytest.approx(kwh * 0.25 + 3650.0 / (12 * 730.0) * 2)


# -- here vs there -------------------------------------------------------------------------


def test_tflops_scaling_rule_and_its_band():
    s = tflops_speedup(0.5, 50.0, at=T0)
    r = 100.0
    assert s.factor.value == pytest.approx(r**SCALE_EXPONENT)
    assert s.factor.low == pytest.approx(r**0.5 * 0.85)
    assert s.factor.high == pytest.approx(r * 1.15)
    assert s.basis == "tflops" and "offer 50" in s.detail
    slower = tflops_speedup(10.0, 5.0, at=T0)  # an offer slower than this machine
    # Half the FLOPS: between half the speed and its square root, never faster than here.
    assert slower.factor.low == pytest.approx(0.5 * 0.85)
    assert slower.factor.high == pytest.approx(0.5**0.5 * 1.15) and slower.factor.high < 1


def rate():
    return local_rate(gpu_box(), EconomicsSettings(price_per_kwh=0.30))


def test_measured_on_both_sides_beats_scaling():
    o = offer(dph=0.40)
    result = compare(
        spec_key="ft-llama",
        work=10_000,
        unit="steps",
        offer=o,
        local_rate=rate(),
        disk_gb=40.0,
        local_units_per_s=Figure(2.0, "measured"),
        cloud_run=CloudRunSpeed("RTX 4090", 1, Figure(5.0, "ledger")),
        local_tflops=0.3,
    )
    assert result.speedup.basis == "measured"
    assert result.speedup.factor.value == pytest.approx(2.5)
    assert result.local.seconds.value == pytest.approx(5000.0)
    assert result.cloud.seconds.value == pytest.approx(2000.0)
    assert result.faster == "there" and result.faster_certain
    local_usd = rate().usd_per_hour.value * 5000 / 3600  # type: ignore[operator]
    assert result.local.total.value == pytest.approx(local_usd)
    storage_dph = o.storage_dph(40.0)
    assert result.cloud.total.value == pytest.approx((0.40 + storage_dph) * 2000 / 3600)
    assert result.cheaper == ("here" if local_usd < result.cloud.total.value else "there")


def test_a_cloud_run_on_another_gpu_is_not_taken_as_this_offers_speed():
    result = compare(
        spec_key="ft",
        work=1000,
        unit="steps",
        offer=offer(gpu_name="RTX 4090", tflops=80.0),
        local_rate=rate(),
        disk_gb=20.0,
        local_units_per_s=Figure(1.0, "measured"),
        cloud_run=CloudRunSpeed("A100 SXM4", 1, Figure(9.0, "ledger")),
        local_tflops=20.0,
    )
    assert result.speedup.basis == "tflops"
    assert result.cloud_units_per_s.value == pytest.approx(4.0**SCALE_EXPONENT)
    assert result.cloud_units_per_s.low == pytest.approx(4.0**0.5 * 0.85)


def test_only_a_cloud_run_scales_down_to_this_machine():
    result = compare(
        spec_key="ft",
        work=3600,
        unit="tokens",
        offer=offer(tflops=80.0),
        local_rate=rate(),
        disk_gb=20.0,
        cloud_run=CloudRunSpeed("rtx 4090", 1, Figure(10.0, "ledger")),
        local_tflops=80.0 / 16,
    )
    assert result.local_units_per_s.value == pytest.approx(10.0 / 16**SCALE_EXPONENT)
    assert result.local.seconds.high == pytest.approx(3600 / (10.0 / (16 * 1.15)))


def test_overhead_counts_toward_the_clouds_wall_time_and_bill():
    common = dict(
        spec_key="short",
        work=60,
        unit="steps",
        local_rate=rate(),
        disk_gb=20.0,
        local_units_per_s=Figure(1.0, "measured"),
        cloud_run=CloudRunSpeed("RTX 4090", 1, Figure(2.0, "ledger")),
    )
    quick = compare(offer=offer(), overhead_s=0.0, **common)  # type: ignore[arg-type]
    slow_start = compare(offer=offer(), overhead_s=900.0, **common)  # type: ignore[arg-type]
    assert quick.faster == "there"
    assert slow_start.faster == "here"  # a 60 s job does not beat 15 minutes of provisioning
    assert slow_start.cloud.total.value > quick.cloud.total.value  # type: ignore[operator]


def test_no_speed_anywhere_or_no_benchmark_says_what_to_do():
    with pytest.raises(EconomicsError, match="no measured speed here or in the cloud"):
        compare(
            spec_key="x",
            work=1,
            unit="steps",
            offer=offer(),
            local_rate=rate(),
            disk_gb=10,
            local_tflops=1.0,
        )
    with pytest.raises(EconomicsError, match="bench --machine"):
        compare(
            spec_key="x",
            work=1,
            unit="steps",
            offer=offer(),
            local_rate=rate(),
            disk_gb=10,
            local_units_per_s=Figure(1.0, "measured"),
        )


def test_history_keeps_each_comparison_so_the_ratio_can_be_followed(tmp_path):
    history = ComparisonHistory(tmp_path / "economics.sqlite3")
    for dph in (0.40, 0.60, 0.30):
        result = compare(
            spec_key="ft-llama",
            work=10_000,
            unit="steps",
            offer=offer(dph=dph),
            local_rate=rate(),
            disk_gb=40.0,
            local_units_per_s=Figure(2.0, "measured"),
            cloud_run=CloudRunSpeed("RTX 4090", 1, Figure(5.0, "ledger")),
        )
        history.record(result)
    history.record(
        compare(
            spec_key="other",
            work=5,
            unit="steps",
            offer=offer(),
            local_rate=rate(),
            disk_gb=10,
            local_units_per_s=Figure(1.0, "measured"),
            local_tflops=1.0,
        )
    )
    again = ComparisonHistory(tmp_path / "economics.sqlite3")  # reopened: persisted
    rows = again.history("ft-llama")
    assert [r.offer_id for r in rows] == [4242, 4242, 4242]
    cloud = [r.cloud_usd for r in rows]
    assert cloud[1] > cloud[0] > cloud[2]  # type: ignore[operator]  # the order prices moved in
    ratios = [r.cost_ratio for r in rows]
    assert ratios[1] > ratios[0] > ratios[2]  # type: ignore[operator]
    assert rows[0].result["speedup"]["basis"] == "measured"
    assert again.specs() == ["other", "ft-llama"]
    mode = again._connect  # the file is in WAL mode, so a UI reader never blocks a writer
    with mode() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
