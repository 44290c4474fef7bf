"""The ledger's cloud spend as economics figures: today, this month, per project, per day.

Everything here is read from the ledger (no provider call), labelled ``ledger`` with the time it
was computed for, so `rigdeck cost`, the economics pane and the budget alerts all show one answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from rigdeck.core.cloud.ledger import LedgerReads
from rigdeck.core.cloud.spend import month_start, summarize, usd_between, usd_by_day
from rigdeck.core.config import EconomicsSettings
from rigdeck.core.economics.breakeven import monthly_cloud
from rigdeck.core.economics.budget_alerts import Spend, SpendSummary
from rigdeck.core.economics.figures import Figure

WINDOW_DAYS = 30


@dataclass(frozen=True)
class CloudSpend:
    """What the ledger says the cloud cost, at ``at``."""

    at: datetime
    summary: SpendSummary
    """Today and this month, in total and per project tag (untagged rentals: total only)."""
    total: Figure
    """Everything since the first rental."""
    burn_usd_per_hour: Figure
    """What the open instances bill per hour now."""
    by_day: tuple[tuple[date, float], ...]
    """This calendar month, one entry per UTC day up to today."""
    last_30_days_usd: float
    ledger_days: float
    """How many days the ledger covers (capped at 30): what the 30-day figure rests on."""
    open_instances: int


def read_cloud_spend(ledger: LedgerReads, now: datetime) -> CloudSpend:
    """Spend at ``now`` from the ledger's billing timelines (one read of each table)."""
    rows = ledger.instances()
    steps = ledger.state_changes()
    summary = summarize(rows, steps, now)
    day: dict[str, float] = {}
    month: dict[str, float] = {}
    for inst in summary.instances:
        if not inst.project:
            continue
        day[inst.project] = day.get(inst.project, 0.0) + inst.today_usd
        month[inst.project] = month.get(inst.project, 0.0) + inst.month_usd

    def fig(value: float, note: str = "") -> Figure:
        return Figure(value, "ledger", now, note=note)

    by_project = {tag: Spend(fig(day[tag]), fig(month[tag])) for tag in sorted(month)}
    spend = SpendSummary(
        Spend(fig(summary.today_usd), fig(summary.month_usd)), by_project=by_project
    )
    start = now - timedelta(days=WINDOW_DAYS)
    last_30 = sum(usd_between(r, steps.get(r.id, ()), start=start, end=now) for r in rows)
    first = min((r.created_at for r in rows), default=None)
    covered = 0.0 if first is None else (now - first).total_seconds() / 86400.0
    days = usd_by_day(rows, steps, start=month_start(now), end=now)
    return CloudSpend(
        at=now,
        summary=spend,
        total=fig(summary.total_usd, "since the first rental"),
        burn_usd_per_hour=fig(summary.burn_dph, "open instances now"),
        by_day=tuple(sorted(days.items())),
        last_30_days_usd=last_30,
        ledger_days=min(max(covered, 0.0), float(WINDOW_DAYS)),
        open_instances=sum(1 for r in rows if r.open),
    )


def empty_cloud_spend(now: datetime) -> CloudSpend:
    """No ledger yet (nothing rented): zero spend, still labelled with its source."""
    zero = Figure(0.0, "ledger", now, note="nothing rented yet")
    return CloudSpend(
        at=now,
        summary=SpendSummary(Spend(zero, zero)),
        total=zero,
        burn_usd_per_hour=zero,
        by_day=(),
        last_30_days_usd=0.0,
        ledger_days=0.0,
        open_instances=0,
    )


def monthly_figure(spend: CloudSpend, settings: EconomicsSettings) -> Figure:
    """The monthly cloud spend an upgrade is weighed against (see `breakeven.monthly_cloud`)."""
    ledger_usd = spend.last_30_days_usd if spend.ledger_days > 0 else None
    return monthly_cloud(ledger_usd, spend.ledger_days, settings, at=spend.at)
