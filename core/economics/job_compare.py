"""A job spec here against an offer: its finished runs gathered from the stores, then `compare`.

A job's size is one whole run of its spec (unit ``run``): a finished local run gives this
machine's speed (1 / its wall seconds), a finished cloud run on the same GPU model and count gives
the offer's; a side with no finished run is scaled from TFLOPS (see compare.py). A job's actual
cost is what was recorded: the energy log for a ``--local`` job, the ledger for a rented one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rigdeck.core.cloud.jobs.lifecycle import Job, JobStore
from rigdeck.core.cloud.ledger import LedgerReads
from rigdeck.core.cloud.provider import Offer
from rigdeck.core.cloud.spend import usd_between
from rigdeck.core.economics.compare import CloudRunSpeed, Comparison, compare
from rigdeck.core.economics.energy_log import EnergyLog
from rigdeck.core.economics.figures import EconomicsError, Figure, iso
from rigdeck.core.economics.power import LocalRate

UNIT = "run"


def spec_key(path: str | Path) -> str:
    """How a spec is named in the comparison history: its absolute path."""
    return str(Path(path).expanduser().resolve())


@dataclass(frozen=True)
class FinishedRuns:
    """The newest finished run of a spec on each side (None: not run there yet)."""

    local: Job | None
    cloud: Job | None
    cloud_gpu: tuple[str, int] | None
    """(GPU model, count) of the instance the cloud run used."""

    @property
    def local_speed(self) -> Figure | None:
        seconds = _seconds(self.local)
        if not seconds or self.local is None:
            return None
        return Figure(1.0 / seconds, "measured", self.local.ended_at, note="one finished run here")

    def cloud_speed(self) -> CloudRunSpeed | None:
        seconds = _seconds(self.cloud)
        if not seconds or self.cloud is None or self.cloud_gpu is None:
            return None
        speed = Figure(1.0 / seconds, "ledger", self.cloud.ended_at, note="one finished cloud run")
        return CloudRunSpeed(self.cloud_gpu[0], self.cloud_gpu[1], speed)

    @property
    def overhead_s(self) -> float:
        """Renting, provisioning and syncing before the cloud run started (0 when unknown)."""
        job = self.cloud
        if job is None or job.started_at is None:
            return 0.0
        return max(float((job.started_at - job.created_at).total_seconds()), 0.0)


def _seconds(job: Job | None) -> float | None:
    if job is None or job.started_at is None or job.ended_at is None:
        return None
    seconds = (job.ended_at - job.started_at).total_seconds()
    return seconds if seconds > 0 else None


def finished_runs(
    jobs: JobStore, spec_path: str | Path, ledger: LedgerReads | None
) -> FinishedRuns:
    """The newest successful run of the spec at ``spec_path`` here and in the cloud."""
    key = spec_key(spec_path)
    local: Job | None = None
    cloud: Job | None = None
    gpu: tuple[str, int] | None = None
    for job in jobs.list(limit=500):  # newest first
        if job.state != "done" or spec_key(job.spec_path) != key or _seconds(job) is None:
            continue
        if job.local:
            local = local or job
        elif cloud is None and isinstance(job.target, int) and ledger is not None:
            inst = ledger.instance(job.target)
            if inst is not None and inst.gpu_name:
                cloud, gpu = job, (inst.gpu_name, inst.num_gpus)
    return FinishedRuns(local, cloud, gpu)


def compare_spec(
    spec_path: str | Path,
    offer: Offer,
    rate: LocalRate,
    runs: FinishedRuns,
    *,
    disk_gb: float,
    local_tflops: float | None,
    at: datetime | None = None,
) -> Comparison:
    """One run of the spec here against one on ``offer``, from its finished runs."""
    return compare(
        spec_key=spec_key(spec_path),
        work=1.0,
        unit=UNIT,
        offer=offer,
        local_rate=rate,
        disk_gb=disk_gb,
        local_units_per_s=runs.local_speed,
        cloud_run=runs.cloud_speed(),
        local_tflops=local_tflops,
        overhead_s=runs.overhead_s,
        at=at,
    )


@dataclass(frozen=True)
class ActualCost:
    """What one job did cost, as recorded."""

    job_id: str
    where: str
    """``here`` or ``there``."""
    seconds: Figure
    cost: Figure
    currency: str
    kwh: Figure | None = None
    instance_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "where": self.where,
            "seconds": self.seconds.to_json(),
            "usd": self.cost.to_json(),
            "currency": self.currency,
            "kwh": None if self.kwh is None else self.kwh.to_json(),
            "instance": self.instance_id,
        }


def actual_cost(
    job: Job,
    *,
    energy: EnergyLog,
    ledger: LedgerReads | None,
    now: datetime,
    rate: LocalRate | None = None,
) -> ActualCost:
    """A job's recorded cost: its metered energy here, or its instance's ledger $ there.

    A local job with no metered energy is costed at ``rate`` (this machine's $/h now) over its
    wall time, and its note says so; without a rate that is an error.
    """
    seconds = _seconds(job)
    if job.local:
        record = energy.for_ref("job", job.id)
        if record is None:
            per_hour = rate.usd_per_hour if rate is not None else None
            usd_per_hour = per_hour.value if per_hour is not None else None
            if rate is None or per_hour is None or usd_per_hour is None or seconds is None:
                raise EconomicsError(
                    f"job {job.id} ran here but its energy was not metered and its run time "
                    "is unknown; nothing to cost it by"
                )
            cost = Figure(
                usd_per_hour * seconds / 3600.0,
                per_hour.source,
                per_hour.at,
                None if per_hour.low is None else per_hour.low * seconds / 3600.0,
                None if per_hour.high is None else per_hour.high * seconds / 3600.0,
                note="not metered: its run time at this machine's rate now",
            )
            return ActualCost(
                job.id, "here", Figure(seconds, "measured", job.ended_at), cost, rate.currency
            )
        return ActualCost(
            job.id,
            "here",
            Figure(record.seconds, record.source, record.kwh_figure().at),
            record.cost_figure(),
            record.currency,
            kwh=record.kwh_figure(),
        )
    if not isinstance(job.target, int) or ledger is None:
        raise EconomicsError(f"job {job.id} has not been placed on an instance yet")
    inst = ledger.instance(job.target)
    if inst is None:
        raise EconomicsError(
            f"job {job.id} ran on instance {job.target}, which the ledger does not hold"
        )
    steps = ledger.state_changes([inst.id]).get(inst.id, [])
    usd = usd_between(inst, steps, end=now)
    stamp = inst.closed_at or now
    note = f"instance {inst.id} from creation to {'destruction' if inst.closed_at else 'now'}"
    return ActualCost(
        job.id,
        "there",
        Figure(seconds, "ledger", job.ended_at or stamp),
        Figure(usd, "ledger", stamp, note=note),
        "USD",
        instance_id=inst.id,
    )


def job_json(comparison: Comparison | None, actual: ActualCost | None) -> dict[str, Any]:
    """`rigdeck cost job --json`: the comparison (here vs there) and, for a job, what it cost."""
    out: dict[str, Any] = {"comparison": None if comparison is None else comparison.to_json()}
    if comparison is not None:
        speed = comparison.speedup
        out["basis"] = {
            "kind": speed.basis,
            "detail": speed.detail,
            "factor": speed.factor.to_json(),
        }
    out["actual"] = None if actual is None else actual.to_json()
    out["at"] = iso(comparison.at) if comparison is not None else None
    return out
