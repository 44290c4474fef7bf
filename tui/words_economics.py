"""How economics values read on screen and in the CLI: money in a currency, figures with their
source and time, breakeven months, and the sentence for what an upgrade unlocks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rigdeck.tui.words import MISSING, duration, money, tps

if TYPE_CHECKING:
    from rigdeck.core.economics.figures import Figure

SOURCE_WORDS = {
    "measured": "measured",
    "ledger": "ledger",
    "offer": "offer",
    "user": "user",
    "default": "default",
}
VERDICT_WORDS = {
    "gpu": "on the GPU",
    "partial": "split between GPU and CPU",
    "cpu": "on the CPU",
    "none": "does not fit",
}


def amount(value: float | None, currency: str = "USD", *, missing: str = MISSING) -> str:
    """Money in ``currency``: dollars as ``$1.23``, anything else as ``1.23 EUR``."""
    if value is None:
        return missing
    if 0 < abs(value) < 0.001:
        # A short run costs a fraction of a cent: say so rather than print 0.000.
        return f"{'-' if value < 0 else ''}<{amount(0.001, currency)}"
    if currency.upper() == "USD":
        return money(value)
    digits = f"{value:.3f}" if 0 < abs(value) < 0.01 else f"{value:,.2f}"
    return f"{digits} {currency.upper()}"


def clock(at: datetime | None) -> str:
    """The time of day a figure was read (UTC), or '' when it has none."""
    return "" if at is None else at.strftime("%H:%M UTC")


def source(fig: Figure, *, with_time: bool = True) -> str:
    """``measured 16:40 UTC``, ``offer 16:38 UTC``, ``your config``."""
    word = SOURCE_WORDS.get(fig.source, fig.source)
    when = clock(fig.at) if with_time else ""
    return f"{word} {when}".strip()


def span(fig: Figure, fmt: Any) -> str:
    """``low–high`` when the figure has a range worth showing, else ''."""
    low, high = fig.range
    if fig.value is None or low is None or high is None or low == high:
        return ""
    return f"{fmt(low)}–{fmt(high)}"


def figure(fig: Figure, fmt: Any, *, time: bool = True) -> str:
    """A value, its range and its source: ``$0.12/h (0.10–0.14, measured 16:40 UTC)``."""
    if fig.value is None:
        return f"{MISSING} ({source(fig, with_time=time)})"
    rng = span(fig, fmt)
    tag = source(fig, with_time=time)
    return f"{fmt(fig.value)} ({rng + ', ' if rng else ''}{tag})"


def per_hour(currency: str) -> Any:
    return lambda v: f"{amount(v, currency)}/h"


def watts(value: float | None) -> str:
    return MISSING if value is None else f"{value:.0f} W"


def months(value: float | None) -> str:
    if value is None:
        return "never"
    if value >= 120:
        return f"{value / 12:.0f} years"
    return f"{value:.1f} months"


def band(low: float | None, high: float | None) -> str:
    """The ±30% band of a breakeven: ``5.6–10.4 months``; an end that never pays says so."""
    if low is None and high is None:
        return "never at either end"
    lo = "never" if low is None else f"{low:.1f}"
    hi = "never" if high is None else f"{high:.1f}"
    return f"{lo}–{hi} months"


def seconds(value: float | None) -> str:
    return MISSING if value is None else duration(value)


def unlock_sentence(label: str, unlock: Mapping[str, Any]) -> str:
    """``+96 GB RAM: Llama 3.1 70B Q4_K_M runs on the CPU at ~1.8 tok/s`` from an unlock's JSON."""
    after = unlock["after"]
    where = VERDICT_WORDS.get(after["verdict"], after["verdict"])
    speed = after.get("decode_tps")
    at = f" at ~{tps(speed)} tok/s" if speed else ""
    before = unlock["before"]
    was = "" if unlock.get("newly_fits") else f" (was {tps(before.get('decode_tps'))} tok/s)"
    return f"{upgrade_words(label)}: {unlock['model']} {unlock['quant']} runs {where}{at}{was}"


def upgrade_words(label: str) -> str:
    """``ram +96G`` -> ``+96 GB RAM``; ``gpu RTX 4090`` -> ``RTX 4090``."""
    kind, _, rest = label.partition(" ")
    if kind == "ram":
        plus = rest.startswith("+")
        size = rest.lstrip("+").rstrip("G")
        return f"{'+' if plus else ''}{size} GB RAM" if plus else f"{size} GB RAM in all"
    if kind == "gpu":
        return f"+{rest.lstrip('+')} (added)" if rest.startswith("+") else rest
    return label


def breakeven_line(report: Mapping[str, Any], currency: str) -> str:
    """One line for an upgrade: months and band, or never and why."""
    label = upgrade_words(report["upgrade"]["label"])
    price = amount(report["upgrade"]["price"], currency)
    if report["breakeven_months"] is None:
        return f"{label} at {price}: never pays for itself ({report['why']})"
    low, high = report["band"]
    return (
        f"{label} at {price}: pays for itself in {months(report['breakeven_months'])} "
        f"({band(low, high)} as cloud prices swing ±30%)"
    )


def alert_words(alert: dict[str, Any]) -> str:
    """``over: total this month $52.00 of $50.00 (104%)``."""
    scope = "all projects" if alert["scope"] == "total" else f"project {alert['scope']}"
    period = "today" if alert["period"] == "day" else "this month"
    level = "OVER BUDGET" if alert["level"] == "over" else "80% of budget"
    return (
        f"{level}: {scope} {period} {amount(alert['spent']['value'])} of "
        f"{amount(alert['budget_usd'])} ({alert['fraction']:.0%})"
    )
