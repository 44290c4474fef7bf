"""Cloud budgets warn at 80% and alert at 100%, per project tag and in total; the `rigdeck cost
--json` object carries every figure with its source."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from rigdeck.core.config import CloudSettings, EconomicsSettings
from rigdeck.core.economics.budget_alerts import (
    Budget,
    Spend,
    SpendSummary,
    budget_alerts,
    level_for,
)
from rigdeck.core.economics.figures import EconomicsError, Figure
from rigdeck.core.economics.power import local_rate
from rigdeck.core.economics.report import cost_report
from tests.support.fixed_snapshot import gpu_box

AT = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


def spent(day: float, month: float) -> Spend:
    return Spend(Figure(day, "ledger", AT), Figure(month, "ledger", AT))


@pytest.mark.parametrize(
    ("spent_usd", "level"),
    [(0.0, None), (7.99, None), (8.0, "warn"), (9.99, "warn"), (10.0, "over"), (25.0, "over")],
)
def test_levels_at_80_and_100_percent(spent_usd, level):
    assert level_for(spent_usd, 10.0) == level


def test_no_budget_never_alerts():
    assert level_for(1e9, 0.0) is None
    assert budget_alerts(SpendSummary(spent(500, 5000)), Budget()) == []


def test_total_and_project_alerts_day_and_month():
    spend = SpendSummary(
        total=spent(day=9.0, month=120.0),
        by_project={"llm-ft": spent(4.2, 30.0), "vision": spent(1.0, 81.0), "misc": spent(9, 9)},
    )
    total = Budget.from_settings(CloudSettings(daily_budget_usd=10.0, monthly_budget_usd=100.0))
    projects = {"llm-ft": Budget(daily=4.0), "vision": Budget(monthly=100.0), "absent": Budget(1)}
    alerts = budget_alerts(spend, total, projects)
    got = [(a.scope, a.period, a.level) for a in alerts]
    assert got == [
        ("total", "day", "warn"),
        ("total", "month", "over"),
        ("llm-ft", "day", "over"),
        ("vision", "month", "warn"),
    ]
    assert alerts[0].fraction == pytest.approx(0.9)
    assert alerts[1].spent.source == "ledger"


def test_negative_budget_is_refused():
    with pytest.raises(EconomicsError, match="positive amount"):
        Budget(daily=-1.0)


def test_cost_report_json_carries_sources_everywhere():
    rate = local_rate(gpu_box(), EconomicsSettings(price_per_kwh=0.35, currency="EUR"))
    spend = SpendSummary(total=spent(2.0, 90.0), by_project={"llm-ft": spent(2.0, 60.0)})
    report = cost_report(rate, spend, Budget(daily=0, monthly=100), {"llm-ft": Budget(5, 50)})
    json.dumps(report)  # plain JSON types only
    for key in ("usd_per_hour", "idle_usd_per_hour", "watts"):
        assert {"value", "source", "at"} <= report["local"][key].keys()
    assert report["local"]["gpu_watts"]["source"] == "measured"
    assert report["cloud"]["month_usd"] == {"value": 90.0, "source": "ledger", "at": AT.isoformat()}
    assert report["cloud"]["by_project"]["llm-ft"]["day_usd"]["value"] == 2.0
    assert report["budget"]["month_fraction"] == pytest.approx(0.9)
    assert report["budget"]["daily_usd"] is None
    levels = [(a["scope"], a["period"], a["level"]) for a in report["budget"]["alerts"]]
    assert levels == [("total", "month", "warn"), ("llm-ft", "month", "over")]
    assert report["notes"] == ["local costs are in EUR, cloud costs in USD"]
