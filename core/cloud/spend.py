"""What the cloud costs: pure functions over ledger values and a time.

Billing follows the provider's rules, by the second: storage from creation to destruction in every
state, the machine's $/hour only while it runs. An instance's billing timeline is its list of
`StateChange` steps (written by the actions and by reconcile when the provider's read differs);
each step holds until the next one, or until the instance closed, or until ``now``.
Days and months are UTC calendar days and months.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from rigdeck.core.cloud.ledger import LedgerInstance, StateChange

GPU_BILLED_STATES = frozenset({"running", "loading", "created"})
"""Provider states in which the machine's $/hour is charged (storage is charged in all)."""


def rate_dph(state: str, dph: float, storage_dph: float) -> float:
    return (dph if state in GPU_BILLED_STATES else 0.0) + storage_dph


def day_start(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC)


def month_start(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def _steps(inst: LedgerInstance, changes: Sequence[StateChange]) -> list[StateChange]:
    steps = sorted(changes, key=lambda c: c.at)
    if not steps:
        # No timeline (an old row): its current rates since creation are the best estimate.
        return [StateChange(inst.id, inst.created_at, inst.state, inst.dph, inst.storage_dph)]
    if steps[0].at > inst.created_at:
        # First seen after creation (adopted, unaccounted): storage billed from creation anyway,
        # at the first state rigdeck saw.
        first = steps[0]
        steps.insert(
            0, StateChange(inst.id, inst.created_at, first.state, first.dph, first.storage_dph)
        )
    return steps


def usd_between(
    inst: LedgerInstance,
    changes: Sequence[StateChange],
    *,
    end: datetime,
    start: datetime | None = None,
) -> float:
    """$ this instance was billed in [start, end) (start None: since creation)."""
    stop = end if inst.closed_at is None else min(end, inst.closed_at)
    begin = inst.created_at if start is None else max(start, inst.created_at)
    if stop <= begin:
        return 0.0
    steps = _steps(inst, changes)
    total = 0.0
    for n, step in enumerate(steps):
        seg_end = steps[n + 1].at if n + 1 < len(steps) else stop
        a, b = max(step.at, begin), min(seg_end, stop)
        if b > a:
            total += (
                (b - a).total_seconds() / 3600 * rate_dph(step.state, step.dph, step.storage_dph)
            )
    return total


def burn_dph(inst: LedgerInstance, changes: Sequence[StateChange]) -> float:
    """$/hour it bills right now (0 once closed)."""
    if not inst.open:
        return 0.0
    last = _steps(inst, changes)[-1]
    return rate_dph(last.state, last.dph, last.storage_dph)


@dataclass(frozen=True)
class InstanceSpend:
    instance_id: int
    project: str
    total_usd: float
    today_usd: float
    month_usd: float
    burn_dph: float
    """$/hour now: storage only when stopped, 0 once closed."""


@dataclass(frozen=True)
class SpendSummary:
    at: datetime
    total_usd: float
    today_usd: float
    month_usd: float
    burn_dph: float
    by_project: Mapping[str, float]
    """$ since creation per project tag ("" for untagged)."""
    by_project_month: Mapping[str, float]
    instances: tuple[InstanceSpend, ...]


def instance_spend(
    inst: LedgerInstance, changes: Sequence[StateChange], now: datetime
) -> InstanceSpend:
    return InstanceSpend(
        instance_id=inst.id,
        project=inst.project,
        total_usd=usd_between(inst, changes, end=now),
        today_usd=usd_between(inst, changes, start=day_start(now), end=now),
        month_usd=usd_between(inst, changes, start=month_start(now), end=now),
        burn_dph=burn_dph(inst, changes),
    )


def summarize(
    instances: Iterable[LedgerInstance],
    changes: Mapping[int, Sequence[StateChange]],
    now: datetime,
) -> SpendSummary:
    """Totals over every instance the ledger knows, unaccounted ones included: they bill too."""
    rows = tuple(instance_spend(i, changes.get(i.id, ()), now) for i in instances)
    by_project: dict[str, float] = {}
    by_project_month: dict[str, float] = {}
    for r in rows:
        by_project[r.project] = by_project.get(r.project, 0.0) + r.total_usd
        by_project_month[r.project] = by_project_month.get(r.project, 0.0) + r.month_usd
    return SpendSummary(
        at=now,
        total_usd=sum(r.total_usd for r in rows),
        today_usd=sum(r.today_usd for r in rows),
        month_usd=sum(r.month_usd for r in rows),
        burn_dph=sum(r.burn_dph for r in rows),
        by_project=by_project,
        by_project_month=by_project_month,
        instances=rows,
    )


def usd_by_day(
    instances: Iterable[LedgerInstance],
    changes: Mapping[int, Sequence[StateChange]],
    *,
    start: datetime,
    end: datetime,
) -> dict[date, float]:
    """$ per UTC calendar day from the day of ``start`` to ``end`` (partial days clipped)."""
    insts = list(instances)
    out: dict[date, float] = {}
    day = day_start(start)
    while day < end:
        nxt = day + timedelta(days=1)
        lo, hi = max(day, start), min(nxt, end)
        out[day.date()] = sum(
            usd_between(i, changes.get(i.id, ()), start=lo, end=hi) for i in insts
        )
        day = nxt
    return out


def usd_by_month(
    instances: Iterable[LedgerInstance],
    changes: Mapping[int, Sequence[StateChange]],
    *,
    start: datetime,
    end: datetime,
) -> dict[tuple[int, int], float]:
    """$ per UTC calendar month, keyed (year, month)."""
    insts = list(instances)
    out: dict[tuple[int, int], float] = {}
    month = month_start(start)
    while month < end:
        nxt = next_month(month)
        lo, hi = max(month, start), min(nxt, end)
        out[(month.year, month.month)] = sum(
            usd_between(i, changes.get(i.id, ()), start=lo, end=hi) for i in insts
        )
        month = nxt
    return out


@dataclass(frozen=True)
class CreditCheck:
    """The ledger's spend set against the provider's own balance over the same span."""

    start: datetime
    end: datetime
    provider_usd: float
    """Balance at ``start`` minus balance at ``end`` (a deposit in between makes it smaller)."""
    ledger_usd: float

    @property
    def difference_usd(self) -> float:
        return self.provider_usd - self.ledger_usd

    def agrees(self, *, tolerance_usd: float = 0.01, tolerance_ratio: float = 0.02) -> bool:
        limit = max(
            tolerance_usd, tolerance_ratio * max(abs(self.provider_usd), abs(self.ledger_usd))
        )
        return abs(self.difference_usd) <= limit


def check_against_credit(
    readings: Sequence[tuple[datetime, float]],
    instances: Iterable[LedgerInstance],
    changes: Mapping[int, Sequence[StateChange]],
) -> CreditCheck | None:
    """Compare balance deltas with the ledger between the first and last reading (None: < 2)."""
    if len(readings) < 2:
        return None
    (t0, b0), (t1, b1) = readings[0], readings[-1]
    ledger = sum(usd_between(i, changes.get(i.id, ()), start=t0, end=t1) for i in instances)
    return CreditCheck(start=t0, end=t1, provider_usd=b0 - b1, ledger_usd=ledger)
