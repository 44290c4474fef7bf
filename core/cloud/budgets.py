"""The cloud budgets set in the config, each with what the ledger says was spent against it.

One reading serves every face that acts on a budget: the guard (warn, alert, stop), and the
rent commands (refuse a rental over a budget). The total is ``[cloud] daily_budget_usd`` and
``monthly_budget_usd``; each ``[cloud.projects.TAG]`` table adds budgets for the rentals tagged
TAG, which count inside the total as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rigdeck.core.cloud.ledger import LedgerInstance, StateChange
from rigdeck.core.cloud.spend import burn_dph, day_start, month_start, usd_between
from rigdeck.core.config import CloudSettings

Period = Literal["day", "month"]


@dataclass(frozen=True)
class BudgetUse:
    """One budget and what was spent against it in its current period."""

    project: str | None
    """None: the whole account; else the project tag."""
    period: Period
    budget_usd: float
    spent_usd: float
    burn_dph: float
    """What the scope's open instances bill per hour now (when the budget will be reached)."""
    start: datetime
    """Start of the current UTC day or calendar month."""

    @property
    def fraction(self) -> float:
        return self.spent_usd / self.budget_usd

    @property
    def reached(self) -> bool:
        return self.spent_usd >= self.budget_usd

    @property
    def period_label(self) -> str:
        """``2026-03`` or ``2026-03-10``: which period a warning was for (warned once each)."""
        return self.start.strftime("%Y-%m" if self.period == "month" else "%Y-%m-%d")


def budget_uses(
    rows: Sequence[LedgerInstance],
    steps: Mapping[int, Sequence[StateChange]],
    cloud: CloudSettings,
    now: datetime,
) -> list[BudgetUse]:
    """Every budget that is set (above 0): the total's month and day, then each project's by
    tag, month before day."""
    scopes: list[tuple[str | None, float, float]] = [
        (None, cloud.monthly_budget_usd, cloud.daily_budget_usd)
    ]
    for name, project in sorted(cloud.projects.items()):
        scopes.append((name, project.monthly_budget_usd, project.daily_budget_usd))
    out: list[BudgetUse] = []
    for tag, monthly, daily in scopes:
        mine = [r for r in rows if tag is None or r.project == tag]
        burn = sum(burn_dph(r, steps.get(r.id, ())) for r in mine)
        periods: tuple[tuple[Period, float, datetime], ...] = (
            ("month", monthly, month_start(now)),
            ("day", daily, day_start(now)),
        )
        for period, budget, start in periods:
            if budget <= 0:
                continue
            spent = sum(usd_between(r, steps.get(r.id, ()), start=start, end=now) for r in mine)
            out.append(BudgetUse(tag, period, budget, spent, burn, start))
    return out


def reached_for(
    rows: Sequence[LedgerInstance],
    steps: Mapping[int, Sequence[StateChange]],
    cloud: CloudSettings,
    now: datetime,
    project: str = "",
) -> list[BudgetUse]:
    """The budgets a new rental tagged ``project`` would run over: the total's, and that
    project's ("" untagged: the total's only)."""
    return [
        use
        for use in budget_uses(rows, steps, cloud, now)
        if use.reached and (use.project is None or (project and use.project == project))
    ]
