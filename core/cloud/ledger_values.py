"""The ledger's values: what it knows about an instance, its billing steps, its events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from rigdeck.core.config import CloudSettings

Source = Literal["rigdeck", "adopted", "unaccounted"]
EventKind = Literal["intent", "outcome", "observed", "guard"]
CLOSED_STATES = ("destroyed", "gone", "never_created")
"""Ledger states of a closed row: destroyed by rigdeck, vanished at the provider, never made."""


def iso(at: datetime) -> str:
    """Persisted form of a time: UTC ISO-8601 with a fixed width, so text order is time order."""
    if at.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def parse_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True)
class Caps:
    """Per-instance limits (0 means none); the guard acts at them."""

    max_usd: float = 0.0
    max_hours: float = 0.0
    idle_minutes: float = 0.0

    @classmethod
    def from_settings(cls, cloud: CloudSettings) -> Caps:
        return cls(cloud.max_usd, cloud.max_hours, cloud.idle_minutes)


@dataclass(frozen=True)
class LedgerInstance:
    id: int
    label: str | None
    source: Source
    state: str
    """The provider's last read state, or ``destroying`` / one of ``CLOSED_STATES``."""
    created_at: datetime
    gpu_name: str = ""
    num_gpus: int = 0
    dph: float = 0.0
    storage_dph: float = 0.0
    image: str | None = None
    disk_gb: float = 0.0
    bid: float | None = None
    interruptible: bool = False
    offer_id: int | None = None
    closed_at: datetime | None = None
    closed_reason: str | None = None
    usd: float = 0.0
    """$ spent so far, as last computed from the billing timeline (reconcile, guard)."""
    caps: Caps = field(default_factory=Caps)
    project: str = ""
    """The user's tag (`rigdeck cloud rent --project`, a job spec's ``project``); "" untagged."""
    gpu_util: float | None = None
    busy_at: datetime | None = None
    """Last time its GPUs were seen in use (or it started running): idle counts from here."""
    seen_at: datetime | None = None
    """Last time the provider's list showed it."""
    status_message: str | None = None
    outbid: bool = False
    job: str = ""
    """The job it was rented for ("" for a rental of its own): how a job finds its instance."""

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True)
class StateChange:
    """One step of an instance's billing timeline: from ``at`` on, it bills at these rates."""

    instance_id: int
    at: datetime
    state: str
    dph: float
    storage_dph: float


@dataclass(frozen=True)
class LedgerEvent:
    seq: int
    at: datetime
    kind: EventKind
    action: str
    label: str | None = None
    instance_id: int | None = None
    intent_seq: int | None = None
    """For an outcome: the intent it answers."""
    ok: bool | None = None
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    cli: str | None = None
    """The equivalent provider CLI command (no credentials)."""


@dataclass(frozen=True)
class RentIntent:
    """A rent the ledger intended: the request and who sent it, and its outcome if one came."""

    intent_seq: int
    at: datetime
    label: str
    data: Mapping[str, Any]
    outcome_ok: bool | None
    """None: no outcome yet (in flight, or its sender died)."""
    instance_id: int | None
    released: bool = False
    """Its sender gave up waiting (the create's answer was lost and the label not listed yet)."""

    @property
    def pid(self) -> int | None:
        pid = self.data.get("pid")
        return pid if isinstance(pid, int) else None
