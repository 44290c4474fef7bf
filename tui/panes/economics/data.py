"""What the economics pane shows, gathered in one blocking call (SQLite reads) for a worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rigdeck.core.cloud.jobs.lifecycle import Job, JobStore
from rigdeck.core.config import Settings
from rigdeck.core.economics.budget_alerts import (
    Budget,
    BudgetAlert,
    budget_alerts,
    budget_status,
    project_budgets,
)
from rigdeck.core.economics.cloud_spend import CloudSpend, monthly_figure
from rigdeck.core.economics.energy_log import EnergyLog, EnergyRecord
from rigdeck.core.economics.figures import EconomicsError, Figure
from rigdeck.core.economics.history import ComparisonHistory, ComparisonRecord
from rigdeck.core.economics.report import upgrade_json
from rigdeck.core.errors import RigdeckError

RECENT_RUNS = 8
SPECS = 8


@dataclass(frozen=True)
class UpgradeRow:
    name: str
    price: str
    report: dict[str, Any] | None
    error: str = ""


@dataclass(frozen=True)
class EconomicsData:
    spend: CloudSpend
    runs: tuple[EnergyRecord, ...]
    comparisons: tuple[ComparisonRecord, ...]
    """The newest comparison of each spec, newest first."""
    upgrades: tuple[UpgradeRow, ...]
    monthly: Figure
    budget: dict[str, Any]
    alerts: tuple[BudgetAlert, ...]
    errors: tuple[str, ...] = field(default=())
    jobs: tuple[tuple[Job, EnergyRecord | None], ...] = field(default=())
    """Finished jobs, newest first, each with its metered energy when it ran here."""


def load_data(settings: Settings, *, simulate: bool, now: datetime) -> EconomicsData:
    """Spend, recent runs, comparisons and the upgrade table. Blocks: call it from a worker."""
    from rigdeck.tui.cli_cost import read_spend

    errors: list[str] = []
    spend = read_spend(simulate, now)
    runs: list[EnergyRecord] = []
    comparisons: list[ComparisonRecord] = []
    try:
        runs = EnergyLog().recent(limit=RECENT_RUNS)
    except RigdeckError as exc:
        errors.append(str(exc))
    try:
        history = ComparisonHistory()
        for key in history.specs()[:SPECS]:
            rows = history.history(key, limit=1)
            comparisons.extend(rows[-1:])
    except RigdeckError as exc:
        errors.append(str(exc))
    jobs: list[tuple[Job, EnergyRecord | None]] = []
    try:
        log = EnergyLog()
        for job in JobStore().list(limit=RECENT_RUNS * 3):
            if job.ended and len(jobs) < RECENT_RUNS:
                jobs.append((job, log.for_ref("job", job.id) if job.local else None))
    except RigdeckError as exc:
        errors.append(str(exc))
    monthly = monthly_figure(spend, settings.economics)
    upgrades = []
    for name, price in sorted(settings.economics.upgrades.items()):
        try:
            report = upgrade_json(f"{name} @{price}", monthly, settings.economics)
            upgrades.append(UpgradeRow(name, str(price), report))
        except EconomicsError as exc:
            upgrades.append(UpgradeRow(name, str(price), None, str(exc)))
    budget = Budget.from_settings(settings.cloud)
    projects = project_budgets(settings.cloud)
    return EconomicsData(
        spend=spend,
        runs=tuple(runs),
        comparisons=tuple(comparisons),
        upgrades=tuple(upgrades),
        monthly=monthly,
        budget=budget_status(spend.summary, budget, projects),
        alerts=tuple(budget_alerts(spend.summary, budget, projects)),
        errors=tuple(errors),
        jobs=tuple(jobs),
    )
