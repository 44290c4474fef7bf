"""A job's cost on each side: here from the energy it used, there from what the cloud billed.

Cloud figures come in as plain values (what the ledger recorded), so this module knows nothing of
the ledger's tables. The estimate before renting uses the offer's prices and a predicted duration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rigdeck.core.cloud.provider import GB, Offer
from rigdeck.core.config import EconomicsSettings
from rigdeck.core.economics.figures import EconomicsError, Figure, combine, now
from rigdeck.core.economics.power import LocalRate, RunEnergy, hardware_per_hour


@dataclass(frozen=True)
class JobCost:
    """One side's cost for one job; ``total`` sums the parts (ranges add up too)."""

    seconds: Figure
    compute: Figure
    """Electricity here; GPU-hours there."""
    storage: Figure
    transfer: Figure
    hardware: Figure
    """Amortised hardware share here (0 there: the rental price includes it)."""
    total: Figure


def local_job_cost(energy: RunEnergy, settings: EconomicsSettings) -> JobCost:
    """What a finished local run cost: its measured energy plus its share of the hardware."""
    seconds = Figure(energy.seconds, energy.kwh.source, energy.kwh.at)
    rate = hardware_per_hour(settings)
    assert rate.value is not None
    hardware = Figure(rate.value * energy.seconds / 3600.0, rate.source, note=rate.note)
    zero = Figure(0.0, "measured")
    return JobCost(seconds, energy.cost, zero, zero, hardware, _sum(energy.cost, hardware))


def estimate_local_job(rate: LocalRate, seconds: Figure) -> JobCost:
    """A job not yet run here: its predicted duration at this machine's hourly cost."""
    hours = _hours(seconds)
    energy = _product(rate.energy_per_hour, hours)
    hardware = _product(rate.hardware_per_hour, hours)
    zero = Figure(0.0, "measured")
    return JobCost(seconds, energy, zero, zero, hardware, _sum(energy, hardware))


@dataclass(frozen=True)
class CloudUsage:
    """One rental as the ledger recorded it (values only; the ledger's types stay in cloud/).

    ``running_seconds``: time the machine was billed at ``dph`` (running, loading). Storage is
    billed from ``created_at`` until ``ended_at`` (destroyed) in every state, stopped included.
    ``transfer_usd_per_gb`` None: the provider did not price transfer for this machine.
    """

    running_seconds: float
    dph: float
    storage_dph: float
    created_at: datetime
    ended_at: datetime | None = None
    transfer_bytes: int = 0
    transfer_usd_per_gb: float | None = None
    read_at: datetime | None = None


def cloud_job_cost(usage: CloudUsage, *, at: datetime | None = None) -> JobCost:
    """What a rental cost: GPU time at its rate, storage from creation, transfer where priced.

    A rental not yet destroyed is billed up to ``at`` (now by default).
    """
    end = usage.ended_at or at or now()
    if usage.created_at.tzinfo is None or end.tzinfo is None:
        raise EconomicsError("cloud times must carry a timezone (the ledger stores UTC)")
    if end < usage.created_at:
        raise EconomicsError(
            f"rental ends ({end.isoformat()}) before it was created "
            f"({usage.created_at.isoformat()}): check the ledger's times"
        )
    if usage.running_seconds < 0:
        raise EconomicsError(f"running time {usage.running_seconds} s: must be 0 or more")
    stamp = usage.read_at or end
    exists_h = (end - usage.created_at).total_seconds() / 3600.0
    compute = Figure(usage.dph * usage.running_seconds / 3600.0, "ledger", stamp)
    storage = Figure(
        usage.storage_dph * exists_h, "ledger", stamp, note=f"{exists_h:.2f} h since creation"
    )
    if usage.transfer_usd_per_gb is None:
        transfer = Figure(0.0, "ledger", stamp, note="transfer not priced")
    else:
        transfer = Figure(usage.transfer_usd_per_gb * usage.transfer_bytes / GB, "ledger", stamp)
    seconds = Figure(usage.running_seconds, "ledger", stamp)
    zero = Figure(0.0, "ledger", stamp)
    return JobCost(seconds, compute, storage, transfer, zero, _sum(compute, storage, transfer))


def estimate_cloud_job(
    offer: Offer,
    seconds: Figure,
    *,
    disk_gb: float,
    overhead_s: float = 0.0,
    transfer_bytes: int = 0,
    transfer_usd_per_gb: float | None = None,
) -> JobCost:
    """A job on ``offer`` before renting: its price times the predicted duration.

    ``overhead_s``: provisioning, sync and collection time, billed like the run (the machine is
    up) and for storage. Prices are the offer's as read at ``offer.read_at``.
    """
    if seconds.value is None:
        raise EconomicsError("no predicted duration for this job: run it once, here or there")
    if disk_gb <= 0:
        raise EconomicsError(f"disk {disk_gb} GB: a rental needs some disk")
    at = offer.read_at
    price = Figure(offer.dph, "offer", at)
    hours = _hours(seconds, extra_s=overhead_s)
    compute = _product(price, hours)
    storage = _product(Figure(offer.storage_dph(disk_gb), "offer", at), hours)
    if transfer_usd_per_gb is None:
        transfer = Figure(0.0, "offer", at, note="transfer not priced")
    else:
        transfer = Figure(transfer_usd_per_gb * transfer_bytes / GB, "offer", at)
    zero = Figure(0.0, "offer", at)
    return JobCost(seconds, compute, storage, transfer, zero, _sum(compute, storage, transfer))


# --------------------------------------------------------------------------------------------
# Figure arithmetic with ranges


def _hours(seconds: Figure, *, extra_s: float = 0.0) -> Figure:
    lo, hi = seconds.range
    if seconds.value is None or lo is None or hi is None:
        return combine(None, seconds)
    return Figure(
        (seconds.value + extra_s) / 3600.0,
        seconds.source,
        seconds.at,
        (lo + extra_s) / 3600.0,
        (hi + extra_s) / 3600.0,
        seconds.note,
    )


def _product(rate: Figure, hours: Figure) -> Figure:
    """rate x hours, both non-negative: the range multiplies end to end."""
    if rate.value is None or hours.value is None:
        return combine(None, rate, hours)
    rlo, rhi = rate.range
    hlo, hhi = hours.range
    assert rlo is not None and rhi is not None and hlo is not None and hhi is not None
    return combine(rate.value * hours.value, rate, hours, low=rlo * hlo, high=rhi * hhi)


def _sum(*parts: Figure) -> Figure:
    if any(p.value is None for p in parts):
        return combine(None, *parts)
    lows = [p.range[0] for p in parts]
    highs = [p.range[1] for p in parts]
    value = sum(p.value for p in parts if p.value is not None)
    low = sum(x for x in lows if x is not None)
    high = sum(x for x in highs if x is not None)
    ranged = low != value or high != value
    return combine(value, *parts, low=low if ranged else None, high=high if ranged else None)
