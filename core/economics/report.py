"""The JSON objects of `rigdeck cost`, `rigdeck cost upgrade` and `rigdeck bench --machine`.

Built from values the caller gathered (a LocalRate, the ledger's spend, a Breakeven, a bench
result), so the CLI and the pane print the same object. Every figure is
``{"value", "source", "at"}`` plus ``low``/``high``/``note`` where they apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rigdeck.core.config import EconomicsSettings
from rigdeck.core.economics.breakeven import Breakeven, Upgrade, breakeven, parse_upgrade
from rigdeck.core.economics.budget_alerts import Budget, SpendSummary, budget_status
from rigdeck.core.economics.figures import Figure, scaled
from rigdeck.core.economics.machine_bench import MachineBench
from rigdeck.core.economics.power import HOURS_PER_MONTH, LocalRate
from rigdeck.core.economics.unlocks import Unlock, unlocks
from rigdeck.core.models.launch import HardwareBudget, ModelInfo, RunSettings


def local_json(rate: LocalRate) -> dict[str, Any]:
    return {
        "usd_per_hour": rate.usd_per_hour.to_json(),
        "idle_usd_per_hour": rate.idle_usd_per_hour.to_json(),
        # Left on around the clock: what "a box left on is not free" comes to in a month.
        "idle_usd_per_month": scaled(rate.idle_usd_per_hour, HOURS_PER_MONTH).to_json(),
        "watts": rate.watts.to_json(),
        "idle_watts": rate.idle_watts.to_json(),
        "gpu_watts": rate.gpu_watts.to_json(),
        "rest_watts": rate.rest_watts.to_json(),
        "energy_per_hour": rate.energy_per_hour.to_json(),
        "hardware_per_hour": rate.hardware_per_hour.to_json(),
        "price_per_kwh": rate.price_per_kwh.to_json(),
        "currency": rate.currency,
    }


def cloud_json(spend: SpendSummary) -> dict[str, Any]:
    return {
        "month_usd": spend.total.month.to_json(),
        "day_usd": spend.total.day.to_json(),
        "by_project": {
            tag: {"day_usd": s.day.to_json(), "month_usd": s.month.to_json()}
            for tag, s in sorted(spend.by_project.items())
        },
    }


def cost_report(
    rate: LocalRate,
    spend: SpendSummary,
    budget: Budget,
    project_budgets: Mapping[str, Budget] | None = None,
) -> dict[str, Any]:
    """`rigdeck cost --json`: this machine per hour, cloud spend, and budgets with alerts."""
    report: dict[str, Any] = {
        "local": local_json(rate),
        "cloud": cloud_json(spend),
        "budget": budget_status(spend, budget, project_budgets),
    }
    if rate.currency.upper() != "USD":
        # No exchange rate is configured: local and cloud amounts are in different currencies.
        report["notes"] = [f"local costs are in {rate.currency}, cloud costs in USD"]
    return report


def upgrade_report(result: Breakeven, unlocked: Sequence[Unlock] = ()) -> dict[str, Any]:
    """`rigdeck cost upgrade "ram +96G @250" --json`. ``breakeven_months`` null means never."""
    up = result.upgrade
    return {
        "upgrade": {
            "label": up.label,
            "kind": up.kind,
            "price": up.price,
            "resale": up.resale,
            "ram_bytes": up.ram_bytes if up.kind == "ram" else None,
            "gpu_name": up.gpu_name or None,
            "gpu_vram_bytes": up.gpu_vram_bytes if up.kind == "gpu" else None,
            "gpu_tdp_w": up.gpu_tdp_w if up.kind == "gpu" else None,
        },
        "breakeven_months": result.months.value,
        "why": result.why or None,
        "band": list(result.band),
        "months": result.months.to_json(),
        "breakeven_months_with_resale": result.months_with_resale.value,
        "months_with_resale": result.months_with_resale.to_json(),
        "resale_value": result.resale_value.to_json(),
        "monthly_cloud": result.monthly_cloud.to_json(),
        "extra_electricity_per_month": result.extra_electricity_per_month.to_json(),
        "monthly_saving": result.monthly_saving.to_json(),
        "assumptions": list(result.assumptions),
        "unlocks": [u.to_json() for u in unlocked],
    }


def bench_report(bench: MachineBench, *, from_cache: bool = False) -> dict[str, Any]:
    """`rigdeck bench --machine --json`: the figures, plus where and when they were taken."""
    return {**bench.to_json(), "cached": from_cache}


def upgrade_json(
    upgrade: str | Upgrade,
    monthly: Figure,
    settings: EconomicsSettings,
    *,
    models: Sequence[ModelInfo] = (),
    base: HardwareBudget | None = None,
    run_settings: RunSettings | None = None,
    use_hours_per_month: Figure | None = None,
) -> dict[str, Any]:
    """Parse, weigh and fit in one call: the whole `rigdeck cost upgrade ... --json` object.

    ``base`` is this machine's budget (`launch.machine_budget()`); without it, or without
    models, ``unlocks`` is empty.
    """
    up = parse_upgrade(upgrade) if isinstance(upgrade, str) else upgrade
    result = breakeven(up, monthly, settings, use_hours_per_month=use_hours_per_month)
    found = unlocks(up, models, base, run_settings) if base is not None and models else []
    return upgrade_report(result, found)
