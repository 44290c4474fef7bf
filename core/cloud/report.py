"""The ledger as data for a face: spend so far and the JSON of ``rigdeck cloud ledger --json``.

Every $ here is the ledger's own (its billing timeline up to ``now``): no provider call is made,
so it works offline and instantly. Run `reconcile` first for figures as of the provider's last read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rigdeck.core.cloud.ledger import Ledger, LedgerEvent, LedgerInstance, StateChange
from rigdeck.core.cloud.spend import (
    SpendSummary,
    burn_dph,
    check_against_credit,
    day_start,
    month_start,
    summarize,
    usd_between,
)

JSON_VERSION = 1


def ledger_summary(ledger: Ledger, now: datetime) -> SpendSummary:
    """Spend per instance, today, this month, per project and in total, at ``now``."""
    return summarize(ledger.instances(), ledger.state_changes(), now)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def instance_json(row: LedgerInstance, steps: list[StateChange], now: datetime) -> dict[str, Any]:
    return {
        "id": row.id,
        "label": row.label,
        "source": row.source,
        "unaccounted": row.source == "unaccounted",
        "state": row.state,
        "open": row.open,
        "outbid": row.outbid,
        "status_message": row.status_message,
        "gpu": row.gpu_name,
        "num_gpus": row.num_gpus,
        "usd_per_hour": row.dph,
        "storage_usd_per_hour": row.storage_dph,
        "burn_usd_per_hour": burn_dph(row, steps),
        "usd": usd_between(row, steps, end=now),
        "usd_today": usd_between(row, steps, start=day_start(now), end=now),
        "usd_month": usd_between(row, steps, start=month_start(now), end=now),
        "created_at": _iso(row.created_at),
        "closed_at": _iso(row.closed_at),
        "closed_reason": row.closed_reason,
        "seen_at": _iso(row.seen_at),
        "project": row.project,
        "caps": {
            "max_usd": row.caps.max_usd,
            "max_hours": row.caps.max_hours,
            "idle_minutes": row.caps.idle_minutes,
        },
        "offer_id": row.offer_id,
        "image": row.image,
        "disk_gb": row.disk_gb,
        "bid": row.bid,
        "interruptible": row.interruptible,
        "gpu_util": row.gpu_util,
    }


def event_json(event: LedgerEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at.isoformat(),
        "kind": event.kind,
        "action": event.action,
        "label": event.label,
        "instance_id": event.instance_id,
        "intent_seq": event.intent_seq,
        "ok": event.ok,
        "detail": event.detail,
        "cli": event.cli,
    }


def ledger_json(
    ledger: Ledger, now: datetime, *, events_limit: int | None = 200, open_only: bool = False
) -> dict[str, Any]:
    """``{"instances": [...], "total_usd", "month_usd", "events": [...], ...}`` at ``now``.

    ``events`` holds the newest ``events_limit`` events (None: all), oldest first.
    """
    rows = ledger.instances()
    steps = ledger.state_changes()
    summary = summarize(rows, steps, now)
    check = check_against_credit(ledger.credits(), rows, steps)
    shown = [r for r in rows if r.open] if open_only else rows
    return {
        "version": JSON_VERSION,
        "at": now.isoformat(),
        "money_source": "ledger",
        "instances": [instance_json(r, steps.get(r.id, []), now) for r in shown],
        "total_usd": summary.total_usd,
        "today_usd": summary.today_usd,
        "month_usd": summary.month_usd,
        "burn_usd_per_hour": summary.burn_dph,
        "by_project": dict(summary.by_project),
        "by_project_month": dict(summary.by_project_month),
        "open": sum(1 for r in rows if r.open),
        "unaccounted": [r.id for r in rows if r.open and r.source == "unaccounted"],
        "pending_rents": [i.label for i in ledger.rent_intents(unanswered_only=True)],
        "credit_check": None
        if check is None
        else {
            "start": check.start.isoformat(),
            "end": check.end.isoformat(),
            "provider_usd": check.provider_usd,
            "ledger_usd": check.ledger_usd,
            "difference_usd": check.difference_usd,
            "agrees": check.agrees(),
        },
        "events": [event_json(e) for e in ledger.events(limit=events_limit)],
    }
