"""When an upgrade pays for itself against the cloud spend it would replace.

    months = price / (cloud spend replaced per month - extra electricity per month)

The cloud figure is a monthly amount passed in (the ledger's last 30 days, or the user's
``monthly_cloud_usd``). Extra electricity assumes the new part runs ``use_hours_per_month``
hours a month: a GPU at its TDP times an assumed utilisation, RAM at a small per-GiB draw; the
power of a GPU it replaces is not subtracted (a cautious answer). The band recomputes the months
with the cloud spend 30% higher and lower, since rental prices swing that much. A saving of zero
or less never breaks even: ``months`` is None and ``why`` says so. With resale, the part's resale
value (typed, else a default share of its price) comes off the price.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rigdeck.core.config import EconomicsSettings
from rigdeck.core.economics.figures import EconomicsError, Figure, combine
from rigdeck.core.economics.power import setting

GiB = 1 << 30
PRICE_SWING = 0.30
DEFAULT_USE_HOURS = 120.0  # about four hours a day
DEFAULT_GPU_UTILISATION = 0.6
RAM_WATTS_PER_GIB = 0.1  # DDR4/DDR5 modules draw roughly 2-4 W per 32 GiB when active
RESALE_SHARE = {"gpu": 0.5, "ram": 0.3}  # what used parts fetch after a couple of years

# (name fragment, VRAM GiB, TDP W); more specific names first, like the fit's speed table.
CARDS: tuple[tuple[str, int, float], ...] = (
    ("rtx pro 6000", 96, 600),
    ("rtx 6000 ada", 48, 300),
    ("5090", 32, 575),
    ("5080", 16, 360),
    ("5070 ti", 16, 300),
    ("5070", 12, 250),
    ("5060 ti", 16, 180),
    ("4090", 24, 450),
    ("4080", 16, 320),
    ("4070 ti super", 16, 285),
    ("4070 ti", 12, 285),
    ("4070 super", 12, 220),
    ("4070", 12, 200),
    ("4060 ti", 16, 165),
    ("4060", 8, 115),
    ("3090 ti", 24, 450),
    ("3090", 24, 350),
    ("3080 ti", 12, 350),
    ("3080", 10, 320),
    ("3070", 8, 220),
    ("3060 ti", 8, 200),
    ("3060", 12, 170),
    ("a6000", 48, 300),
    ("a5000", 24, 230),
    ("a4000", 16, 140),
    ("l40s", 48, 350),
    ("l40", 48, 300),
    ("a100", 80, 300),
    ("h100", 80, 350),
    ("v100", 32, 250),
    ("l4", 24, 72),
    ("t4", 16, 70),
)

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt])i?b?$", re.IGNORECASE)
_WATTS = re.compile(r"^(\d+(?:\.\d+)?)\s*w$", re.IGNORECASE)
_MONEY = re.compile(r"^[$€£]?\s*(\d+(?:[.,]\d+)*)\s*[$€£]?$")
_SCALE = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
EXAMPLE = 'e.g. "ram +96G @250" or "gpu RTX 4090 @1800 resale 900"'


@dataclass(frozen=True)
class Upgrade:
    """A part to buy. RAM: ``ram_bytes`` added (``ram_add``) or the new total. GPU: the card,
    replacing this machine's GPUs unless ``gpu_add``."""

    kind: Literal["ram", "gpu"]
    label: str
    price: float
    resale: float | None = None
    ram_bytes: int = 0
    ram_add: bool = True
    gpu_name: str = ""
    gpu_vram_bytes: int = 0
    gpu_tdp_w: float = 0.0
    gpu_add: bool = False
    tdp_source: Literal["user", "default"] = "default"


def parse_upgrade(text: str) -> Upgrade:
    """An upgrade from 'KIND SPEC @PRICE [resale VALUE]'.

    ram +96G @250 (add 96 GiB), ram 128G @400 (new total), gpu RTX 4090 @1800 (replaces the
    GPUs), gpu +RTX 3090 @700 (added), gpu "Some Card" 20G 300W @900 (VRAM and TDP given).
    """
    raw = " ".join(text.split())
    if raw.count("@") != 1:
        raise EconomicsError(f"{raw!r}: put the price after one @, {EXAMPLE}")
    what, money = (part.strip() for part in raw.split("@"))
    price, resale = _parse_money(raw, money)
    words = what.split()
    if not words:
        raise EconomicsError(f"{raw!r}: say what to buy before the @, {EXAMPLE}")
    kind = words[0].lower()
    rest = words[1:]
    if kind == "ram":
        return _parse_ram(raw, rest, price, resale)
    if kind == "gpu":
        return _parse_gpu(raw, rest, price, resale)
    raise EconomicsError(f"{raw!r}: an upgrade starts with ram or gpu, {EXAMPLE}")


def upgrade_from_config(name: str, price: str) -> Upgrade:
    """One entry of ``[economics] upgrades`` (name = price)."""
    return parse_upgrade(f"{name} @{price}")


def _parse_money(raw: str, text: str) -> tuple[float, float | None]:
    parts = text.split()
    resale: float | None = None
    if len(parts) == 3 and parts[1].lower() == "resale":
        resale = _amount(raw, parts[2])
    elif len(parts) != 1:
        raise EconomicsError(f"{raw!r}: after @ give a price, optionally 'resale VALUE'")
    price = _amount(raw, parts[0])
    if price <= 0:
        raise EconomicsError(f"{raw!r}: the price must be more than zero")
    if resale is not None and resale > price:
        raise EconomicsError(f"{raw!r}: a resale value above the price would pay you to buy it")
    return price, resale


def _amount(raw: str, text: str) -> float:
    m = _MONEY.match(text)
    if m is None:
        raise EconomicsError(f"{raw!r}: {text!r} is not an amount; write it like 250 or 1800.50")
    digits = m.group(1)
    # "1,800" is thousands; "18,50" a decimal comma.
    if "," in digits and "." not in digits and re.fullmatch(r"\d+,\d{1,2}", digits):
        digits = digits.replace(",", ".")
    return float(digits.replace(",", ""))


def _size(text: str) -> int | None:
    m = _SIZE.match(text)
    if m is None:
        return None
    value = int(float(m.group(1)) * _SCALE[m.group(2).lower()])
    return value if value > 0 else None


def _parse_ram(raw: str, rest: list[str], price: float, resale: float | None) -> Upgrade:
    if len(rest) != 1:
        raise EconomicsError(f"{raw!r}: give one RAM size: ram +96G (added) or ram 128G (total)")
    spec = rest[0]
    add = spec.startswith("+")
    size = _size(spec.lstrip("+"))
    if size is None:
        raise EconomicsError(f"{raw!r}: {spec!r} is not a size; write it like +96G or 128G")
    label = f"ram {'+' if add else ''}{_gib(size)}G"
    return Upgrade("ram", label, price, resale, ram_bytes=size, ram_add=add)


def _parse_gpu(raw: str, rest: list[str], price: float, resale: float | None) -> Upgrade:
    add = bool(rest) and rest[0].startswith("+")
    if add:
        rest = [rest[0][1:], *rest[1:]] if rest[0] != "+" else rest[1:]
    vram: int | None = None
    tdp: float | None = None
    name_words: list[str] = []
    for word in rest:
        size, watts = _size(word), _WATTS.match(word)
        if size is not None and name_words:
            vram = size
        elif watts is not None and name_words:
            tdp = float(watts.group(1))
        else:
            name_words.append(word.strip("\"'"))
    name = " ".join(w for w in name_words if w)
    if not name:
        raise EconomicsError(f"{raw!r}: name the card: gpu RTX 4090 @1800")
    known = card(name)
    if vram is None:
        if known is None:
            raise EconomicsError(
                f"{raw!r}: unknown card {name!r}; give its VRAM, e.g. gpu {name} 24G @{price:g}"
            )
        vram = known[0] * GiB
    source: Literal["user", "default"] = "user" if tdp is not None else "default"
    if tdp is None:
        # Unknown cards: a midrange draw, said so in the figure's source.
        tdp = known[1] if known is not None else 250.0
    label = f"gpu {'+' if add else ''}{name}"
    return Upgrade(
        "gpu",
        label,
        price,
        resale,
        gpu_name=name,
        gpu_vram_bytes=vram,
        gpu_tdp_w=tdp,
        gpu_add=add,
        tdp_source=source,
    )


def card(name: str) -> tuple[int, float] | None:
    """(VRAM GiB, TDP W) for a card name, or None."""
    low = name.lower()
    for key, vram, tdp in CARDS:
        if key in low:
            return vram, tdp
    return None


def _gib(n: int) -> str:
    return f"{n / GiB:g}"


# --------------------------------------------------------------------------------------------
# Months


@dataclass(frozen=True)
class Breakeven:
    upgrade: Upgrade
    months: Figure
    """None: never (see ``why``)."""
    band: tuple[float | None, float | None]
    """Months with the cloud spend 30% higher and 30% lower (None: never at that end)."""
    months_with_resale: Figure
    resale_value: Figure
    monthly_cloud: Figure
    extra_electricity_per_month: Figure
    monthly_saving: Figure
    why: str
    """Why it never breaks even; empty when it does."""
    assumptions: tuple[str, ...]


def extra_watts(upgrade: Upgrade, *, gpu_utilisation: float = DEFAULT_GPU_UTILISATION) -> Figure:
    """The part's added draw while in use (component watts, before the PSU)."""
    if upgrade.kind == "gpu":
        return Figure(
            upgrade.gpu_tdp_w * gpu_utilisation,
            upgrade.tdp_source,
            note=f"TDP {upgrade.gpu_tdp_w:g} W at {gpu_utilisation:.0%} utilisation",
        )
    return Figure(
        upgrade.ram_bytes / GiB * RAM_WATTS_PER_GIB,
        "default",
        note=f"{RAM_WATTS_PER_GIB:g} W per GiB",
    )


def breakeven(
    upgrade: Upgrade,
    monthly_cloud: Figure,
    settings: EconomicsSettings,
    *,
    use_hours_per_month: Figure | None = None,
    gpu_utilisation: float = DEFAULT_GPU_UTILISATION,
) -> Breakeven:
    """Months until ``upgrade`` pays for itself against ``monthly_cloud`` (see the module doc)."""
    if monthly_cloud.value is None or monthly_cloud.value < 0:
        raise EconomicsError("no monthly cloud spend to weigh the upgrade against")
    if not 0 < gpu_utilisation <= 1:
        raise EconomicsError(f"GPU utilisation {gpu_utilisation}: use a share from 0 to 1")
    hours = use_hours_per_month or Figure(DEFAULT_USE_HOURS, "default", note="about 4 h a day")
    assert hours.value is not None
    tariff = setting(settings, "price_per_kwh")
    assert tariff.value is not None
    watts = extra_watts(upgrade, gpu_utilisation=gpu_utilisation)
    assert watts.value is not None
    kwh = watts.value / settings.psu_efficiency * hours.value / 1000.0
    electricity = combine(kwh * tariff.value, watts, hours, tariff, note=watts.note)
    assert electricity.value is not None
    cloud = monthly_cloud.value
    saving_value = cloud - electricity.value
    saving = combine(
        saving_value,
        monthly_cloud,
        electricity,
        low=cloud * (1 - PRICE_SWING) - electricity.value,
        high=cloud * (1 + PRICE_SWING) - electricity.value,
    )
    share = RESALE_SHARE[upgrade.kind]
    resale = (
        Figure(upgrade.resale, "user")
        if upgrade.resale is not None
        else Figure(upgrade.price * share, "default", note=f"{share:.0%} of the price")
    )
    assert resale.value is not None

    def months(cost: float, per_month: float) -> float | None:
        return cost / per_month if per_month > 0 else None

    price = upgrade.price
    plain = months(price, saving_value)
    fast = months(price, cloud * (1 + PRICE_SWING) - electricity.value)
    slow = months(price, cloud * (1 - PRICE_SWING) - electricity.value)
    why = ""
    if plain is None:
        why = (
            "no cloud spend to replace"
            if cloud == 0
            else f"the cloud spend it replaces ({cloud:.2f}/month) does not cover its extra "
            f"electricity ({electricity.value:.2f}/month): renting stays cheaper"
        )
    sourced = combine(plain, monthly_cloud, electricity, low=fast, high=slow)
    with_resale = combine(
        months(price - resale.value, saving_value),
        monthly_cloud,
        electricity,
        resale,
        note="the part sold afterwards",
    )
    assumptions = (
        f"used {hours.value:g} h a month ({hours.source})",
        watts.note,
        "cloud spend swings ±30%",
        "a replaced GPU's own power is not subtracted" if upgrade.kind == "gpu" else "",
    )
    return Breakeven(
        upgrade=upgrade,
        months=sourced,
        band=(fast, slow),
        months_with_resale=with_resale,
        resale_value=resale,
        monthly_cloud=monthly_cloud,
        extra_electricity_per_month=electricity,
        monthly_saving=saving,
        why=why,
        assumptions=tuple(a for a in assumptions if a),
    )


def monthly_cloud(
    ledger_last_30_days_usd: float | None,
    ledger_days: float,
    settings: EconomicsSettings,
    *,
    at: datetime | None = None,
) -> Figure:
    """The monthly cloud spend an upgrade is weighed against.

    The ledger's last 30 days when it covers them; else the user's ``monthly_cloud_usd`` when
    set; else what the ledger has, scaled to 30 days (and said so).
    """
    if ledger_last_30_days_usd is not None and ledger_days >= 30:
        return Figure(ledger_last_30_days_usd, "ledger", at, note="last 30 days")
    if settings.monthly_cloud_usd > 0:
        return Figure(settings.monthly_cloud_usd, "user", note="economics.monthly_cloud_usd")
    if ledger_last_30_days_usd is None or ledger_days <= 0:
        return Figure(0.0, "default", note="no cloud spend recorded and none configured")
    scaled_value = ledger_last_30_days_usd * 30.0 / ledger_days
    return Figure(
        scaled_value, "ledger", at, note=f"the ledger's {ledger_days:.0f} days scaled to 30"
    )
