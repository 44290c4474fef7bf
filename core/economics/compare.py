"""This job here against this job on offer X: time and money on each side, and which wins.

The speed on each side is, best first:

1. measured: a finished run of the same job spec (here: the run history; there: a finished
   cloud run on the same GPU model and count);
2. scaled from machine benchmarks: the other side's speed times a speed-up derived from fp32
   TFLOPS (this machine's `machine_bench` figure against the offer's ``tflops``).

The scaling rule. With r = offer TFLOPS / local TFLOPS, the expected speed-up is r^0.8 and the
range r^0.5 .. r, widened by 15% each way. A job rarely turns all extra FLOPS into speed (data
loading, memory-bound kernels, small batches do not scale), so r is the optimistic end and its
square root the pessimistic one; the exponent 0.8 sits between the two on the log scale, a bit
nearer the top since the jobs worth renting a GPU for are mostly compute-bound. The offer's
``dlperf`` is Vast's own composite score with no counterpart we can measure here, so it is not
used for this ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from rigdeck.core.cloud.provider import Offer
from rigdeck.core.economics.costs import JobCost, estimate_cloud_job, estimate_local_job
from rigdeck.core.economics.figures import EconomicsError, Figure, combine, iso, now
from rigdeck.core.economics.power import LocalRate

Basis = Literal["measured", "tflops"]
Side = Literal["here", "there"]

SCALE_EXPONENT = 0.8
SCALE_LOW_EXPONENT = 0.5
SCALE_WIDEN = 0.15
# Same job, same GPU model elsewhere: hosts differ in CPU, disk and PCIe.
MEASURED_BAND = 0.10


@dataclass(frozen=True)
class CloudRunSpeed:
    """A finished cloud run of this job spec: where it ran and how fast it went."""

    gpu_name: str
    num_gpus: int
    units_per_s: Figure


@dataclass(frozen=True)
class SpeedUp:
    """How many times faster the offer runs this job than this machine (range included)."""

    factor: Figure
    basis: Basis
    detail: str
    """What the factor rests on, e.g. 'TFLOPS fp32: offer 82.6 vs here 0.31'."""


@dataclass(frozen=True)
class Comparison:
    spec_key: str
    unit: str
    work: float
    offer_id: int
    gpu_name: str
    num_gpus: int
    offer_read_at: datetime
    local_units_per_s: Figure
    cloud_units_per_s: Figure
    speedup: SpeedUp
    local: JobCost
    cloud: JobCost
    cheaper: Side
    cheaper_certain: bool
    """False when the two cost ranges overlap: the answer could flip."""
    faster: Side
    faster_certain: bool
    at: datetime

    def to_json(self) -> dict[str, Any]:
        def side(cost: JobCost, speed: Figure) -> dict[str, Any]:
            return {
                "seconds": cost.seconds.to_json(),
                "usd": cost.total.to_json(),
                "units_per_s": speed.to_json(),
                "parts": {
                    "compute": cost.compute.to_json(),
                    "storage": cost.storage.to_json(),
                    "transfer": cost.transfer.to_json(),
                    "hardware": cost.hardware.to_json(),
                },
            }

        return {
            "spec": self.spec_key,
            "unit": self.unit,
            "work": self.work,
            "offer": {
                "id": self.offer_id,
                "gpu_name": self.gpu_name,
                "num_gpus": self.num_gpus,
                "read_at": iso(self.offer_read_at),
            },
            "here": side(self.local, self.local_units_per_s),
            "there": side(self.cloud, self.cloud_units_per_s),
            "speedup": {
                **self.speedup.factor.to_json(),
                "basis": self.speedup.basis,
                "detail": self.speedup.detail,
            },
            "cheaper": self.cheaper,
            "cheaper_certain": self.cheaper_certain,
            "faster": self.faster,
            "faster_certain": self.faster_certain,
            "at": iso(self.at),
        }


def tflops_speedup(local_tflops: float, offer_tflops: float, *, at: datetime | None) -> SpeedUp:
    """The speed-up the TFLOPS ratio suggests, by the rule in this module's docstring."""
    if local_tflops <= 0 or offer_tflops <= 0:
        raise EconomicsError("TFLOPS must be positive on both sides to scale a job's speed")
    r = offer_tflops / local_tflops
    ends = (r**SCALE_LOW_EXPONENT, r)
    low, high = min(ends) * (1 - SCALE_WIDEN), max(ends) * (1 + SCALE_WIDEN)
    factor = Figure(
        r**SCALE_EXPONENT,
        "offer",
        at,
        low=low,
        high=high,
        note=f"scaled from TFLOPS: ratio {r:.3g}, speed-up r^{SCALE_EXPONENT}",
    )
    detail = f"TFLOPS fp32: offer {offer_tflops:.3g} vs here {local_tflops:.3g}"
    return SpeedUp(factor, "tflops", detail)


def measured_speedup(local: Figure, cloud: Figure) -> SpeedUp:
    """Both sides measured: their ratio, with a 10% band each way for host-to-host spread."""
    assert local.value and cloud.value
    r = cloud.value / local.value
    factor = combine(r, local, cloud, low=r * (1 - MEASURED_BAND), high=r * (1 + MEASURED_BAND))
    return SpeedUp(factor, "measured", "a finished run of this job on each side")


def compare(
    *,
    spec_key: str,
    work: float,
    unit: str,
    offer: Offer,
    local_rate: LocalRate,
    disk_gb: float,
    local_units_per_s: Figure | None = None,
    cloud_run: CloudRunSpeed | None = None,
    local_tflops: float | None = None,
    overhead_s: float = 0.0,
    at: datetime | None = None,
) -> Comparison:
    """Time and cost of ``work`` units (steps, tokens) of one job here and on ``offer``.

    ``local_units_per_s``: this job's measured speed here. ``cloud_run``: a finished cloud run
    of the same spec (used when its GPU model and count match the offer). ``local_tflops``:
    this machine's fp32 TFLOPS (`MachineBench.total_flops`), for scaling when a side is
    missing. ``overhead_s``: provisioning and sync time the rental bills on top of the run.
    """
    if work <= 0:
        raise EconomicsError(f"job size {work} {unit}: must be more than zero")
    cloud_speed = _matching_cloud_speed(cloud_run, offer)
    local_speed = local_units_per_s if local_units_per_s and local_units_per_s.value else None

    if local_speed is not None and cloud_speed is not None:
        speedup = measured_speedup(local_speed, cloud_speed)
    else:
        if local_speed is None and cloud_speed is None:
            raise EconomicsError(
                "cannot compare: this job has no measured speed here or in the cloud; "
                "run it once (a short run is enough) and compare again"
            )
        if local_tflops is None or offer.tflops is None:
            missing = "this machine's benchmark" if local_tflops is None else "the offer's TFLOPS"
            raise EconomicsError(
                f"cannot compare: this job has no measured speed on one side and {missing} "
                "is missing; run `rigdeck bench --machine` or the job once on each side"
            )
        speedup = tflops_speedup(local_tflops, offer.tflops, at=offer.read_at)
        if cloud_speed is None:
            assert local_speed is not None
            cloud_speed = _times(local_speed, speedup.factor)
        else:
            local_speed = _divided(cloud_speed, speedup.factor)

    local_seconds = _duration(work, local_speed)
    cloud_seconds = _duration(work, cloud_speed)
    local_cost = estimate_local_job(local_rate, local_seconds)
    cloud_cost = estimate_cloud_job(offer, cloud_seconds, disk_gb=disk_gb, overhead_s=overhead_s)
    cloud_wall = _shifted(cloud_seconds, overhead_s)
    cheaper, cheaper_certain = _smaller(local_cost.total, cloud_cost.total)
    faster, faster_certain = _smaller(local_seconds, cloud_wall)
    return Comparison(
        spec_key=spec_key,
        unit=unit,
        work=work,
        offer_id=offer.id,
        gpu_name=offer.gpu_name,
        num_gpus=offer.num_gpus,
        offer_read_at=offer.read_at,
        local_units_per_s=local_speed,
        cloud_units_per_s=cloud_speed,
        speedup=speedup,
        local=local_cost,
        cloud=cloud_cost,
        cheaper=cheaper,
        cheaper_certain=cheaper_certain,
        faster=faster,
        faster_certain=faster_certain,
        at=at or now(),
    )


def _matching_cloud_speed(run: CloudRunSpeed | None, offer: Offer) -> Figure | None:
    if run is None or not run.units_per_s.value:
        return None
    same = run.gpu_name.strip().lower() == offer.gpu_name.strip().lower()
    return run.units_per_s if same and run.num_gpus == offer.num_gpus else None


def _times(speed: Figure, factor: Figure) -> Figure:
    assert speed.value is not None and factor.value is not None
    slo, shi = speed.range
    flo, fhi = factor.range
    assert slo is not None and shi is not None and flo is not None and fhi is not None
    return combine(
        speed.value * factor.value, speed, factor, low=slo * flo, high=shi * fhi, note=factor.note
    )


def _divided(speed: Figure, factor: Figure) -> Figure:
    assert speed.value is not None and factor.value is not None
    slo, shi = speed.range
    flo, fhi = factor.range
    assert slo is not None and shi is not None and flo and fhi
    return combine(
        speed.value / factor.value, speed, factor, low=slo / fhi, high=shi / flo, note=factor.note
    )


def _duration(work: float, speed: Figure) -> Figure:
    """Seconds for ``work`` units: the slow end of the speed is the long end of the time."""
    assert speed.value
    lo, hi = speed.range
    return combine(
        work / speed.value,
        speed,
        low=work / hi if hi else None,
        high=work / lo if lo else None,
        note=speed.note,
    )


def _shifted(seconds: Figure, extra: float) -> Figure:
    lo, hi = seconds.range
    assert seconds.value is not None and lo is not None and hi is not None
    return Figure(seconds.value + extra, seconds.source, seconds.at, lo + extra, hi + extra)


def _smaller(here: Figure, there: Figure) -> tuple[Side, bool]:
    """Which side is smaller by value, and whether the ranges keep it so."""
    assert here.value is not None and there.value is not None
    side: Side = "here" if here.value <= there.value else "there"
    here_lo, here_hi = here.range
    there_lo, there_hi = there.range
    assert here_lo is not None and here_hi is not None
    assert there_lo is not None and there_hi is not None
    certain = here_hi < there_lo if side == "here" else there_hi < here_lo
    return side, certain
