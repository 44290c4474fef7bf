"""Daily and monthly cloud budgets: a warning at 80%, an alert at 100%, per project and in total.

Spend comes in as values (the ledger's sums for today and this calendar month, per project tag),
so this module stays independent of how the ledger stores them. The total budgets are
``[cloud] daily_budget_usd`` and ``monthly_budget_usd``; per-project budgets are the
``[cloud.projects.TAG]`` tables (`project_budgets`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rigdeck.core.config import CloudSettings
from rigdeck.core.economics.figures import EconomicsError, Figure

WARN_AT = 0.8
OVER_AT = 1.0
TOTAL = "total"

Period = Literal["day", "month"]
Level = Literal["warn", "over"]


@dataclass(frozen=True)
class Spend:
    """Money spent today and this calendar month (UTC), in USD."""

    day: Figure
    month: Figure


@dataclass(frozen=True)
class SpendSummary:
    """The whole account and each project tag (untagged rentals count in the total only)."""

    total: Spend
    by_project: Mapping[str, Spend] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """Caps in USD; 0 means none for that period."""

    daily: float = 0.0
    monthly: float = 0.0

    def __post_init__(self) -> None:
        if self.daily < 0 or self.monthly < 0:
            raise EconomicsError("a budget is 0 (none) or a positive amount of dollars")

    @classmethod
    def from_settings(cls, cloud: CloudSettings) -> Budget:
        return cls(daily=cloud.daily_budget_usd, monthly=cloud.monthly_budget_usd)


def project_budgets(cloud: CloudSettings) -> dict[str, Budget]:
    """The ``[cloud.projects.TAG]`` budgets, by tag."""
    return {
        tag: Budget(daily=p.daily_budget_usd, monthly=p.monthly_budget_usd)
        for tag, p in sorted(cloud.projects.items())
    }


@dataclass(frozen=True)
class BudgetAlert:
    scope: str
    """``total`` or a project tag."""
    period: Period
    level: Level
    spent: Figure
    budget: float
    fraction: float

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "period": self.period,
            "level": self.level,
            "spent": self.spent.to_json(),
            "budget_usd": self.budget,
            "fraction": self.fraction,
        }


def level_for(spent: float, budget: float) -> Level | None:
    """``over`` at 100% or more, ``warn`` from 80%, None below (or with no budget)."""
    if budget <= 0:
        return None
    share = spent / budget
    if share >= OVER_AT:
        return "over"
    if share >= WARN_AT:
        return "warn"
    return None


def budget_alerts(
    spend: SpendSummary,
    total: Budget,
    projects: Mapping[str, Budget] | None = None,
) -> list[BudgetAlert]:
    """Every budget at 80% or over: the total first, then projects by name; day before month."""
    scopes: list[tuple[str, Spend, Budget]] = [(TOTAL, spend.total, total)]
    for tag in sorted((projects or {}).keys()):
        used = spend.by_project.get(tag)
        if used is not None:
            scopes.append((tag, used, (projects or {})[tag]))
    alerts = []
    for scope, used, budget in scopes:
        periods: tuple[tuple[Period, Figure, float], ...] = (
            ("day", used.day, budget.daily),
            ("month", used.month, budget.monthly),
        )
        for period, figure, cap in periods:
            if figure.value is None:
                continue
            level = level_for(figure.value, cap)
            if level is not None:
                alerts.append(BudgetAlert(scope, period, level, figure, cap, figure.value / cap))
    return alerts


def budget_status(
    spend: SpendSummary, total: Budget, projects: Mapping[str, Budget] | None = None
) -> dict[str, Any]:
    """The ``budget`` object of ``rigdeck cost --json``: caps, shares used, and the alerts."""

    def share(figure: Figure, cap: float) -> float | None:
        return None if cap <= 0 or figure.value is None else figure.value / cap

    def scope(used: Spend, budget: Budget) -> dict[str, Any]:
        return {
            "daily_usd": budget.daily or None,
            "monthly_usd": budget.monthly or None,
            "day_fraction": share(used.day, budget.daily),
            "month_fraction": share(used.month, budget.monthly),
        }

    # A project with a budget and nothing spent yet still shows, at 0%: the budget is in force.
    nothing = Spend(
        Figure(0.0, spend.total.day.source, spend.total.day.at),
        Figure(0.0, spend.total.month.source, spend.total.month.at),
    )
    by_project = {
        tag: scope(spend.by_project.get(tag, nothing), b)
        for tag, b in sorted((projects or {}).items())
    }
    return {
        **scope(spend.total, total),
        "by_project": by_project,
        "alerts": [a.to_json() for a in budget_alerts(spend, total, projects)],
    }
