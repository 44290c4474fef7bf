"""A number with its provenance: what every economics function returns.

rigdeck shows no bare money or power figure: each carries its source (so a user can tell a
measurement from a guess), the time it was read (offer prices move), and a low..high range when
the inputs are uncertain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from rigdeck.core.errors import RigdeckError

Source = Literal["measured", "ledger", "offer", "user", "default"]
SOURCES: tuple[str, ...] = get_args(Source)

# When figures of different sources combine, the result is only as good as its weakest input.
_RANK = {"measured": 0, "ledger": 0, "offer": 1, "user": 2, "default": 3}


@dataclass(frozen=True)
class Figure:
    """``value`` (None: unknown) from ``source`` at ``at``; ``low``/``high`` bound it if set.

    ``note`` says in a few words what the value is based on where that is not obvious (an
    assumption, a scaling rule).
    """

    value: float | None
    source: Source
    at: datetime | None = None
    low: float | None = None
    high: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown figure source {self.source!r}")
        if self.at is not None and self.at.tzinfo is None:
            raise ValueError("a figure's time must be timezone-aware")

    @property
    def known(self) -> bool:
        return self.value is not None

    @property
    def range(self) -> tuple[float | None, float | None]:
        """(low, high), each falling back to the value itself."""
        return (
            self.low if self.low is not None else self.value,
            self.high if self.high is not None else self.value,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": self.value,
            "source": self.source,
            "at": iso(self.at),
        }
        if self.low is not None:
            out["low"] = self.low
        if self.high is not None:
            out["high"] = self.high
        if self.note:
            out["note"] = self.note
        return out


def iso(at: datetime | None) -> str | None:
    """UTC ISO-8601 to the second, or None."""
    return None if at is None else at.astimezone(UTC).isoformat(timespec="seconds")


def now() -> datetime:
    return datetime.now(UTC)


def weakest(*sources: Source) -> Source:
    """The least trustworthy of several sources: what a figure computed from them is labelled."""
    return max(sources, key=lambda s: _RANK[s])


def latest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def scaled(fig: Figure, factor: float, *, note: str | None = None) -> Figure:
    """``fig`` times a constant (a unit change, hours in a month): same source, range scaled."""

    def mul(x: float | None) -> float | None:
        return None if x is None else x * factor

    lo, hi = mul(fig.low), mul(fig.high)
    if factor < 0:
        lo, hi = hi, lo
    return Figure(mul(fig.value), fig.source, fig.at, lo, hi, fig.note if note is None else note)


def combine(
    value: float | None,
    *inputs: Figure,
    low: float | None = None,
    high: float | None = None,
    note: str = "",
) -> Figure:
    """A figure computed from ``inputs``: the weakest source, the latest time among them."""
    if not inputs:
        raise ValueError("combine needs at least one input figure")
    if low == value and high == value:
        low = high = None  # a range of one point says nothing
    return Figure(
        value,
        weakest(*(f.source for f in inputs)),
        latest(*(f.at for f in inputs)),
        low,
        high,
        note,
    )


class EconomicsError(RigdeckError):
    """A cost, upgrade or budget input is unusable; the message says which and how to fix it."""
