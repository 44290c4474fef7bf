"""The ledger set against the provider's full instance list, so nothing billing goes unseen.

Run on every start and on demand (the guard runs it every poll). It adopts what the ledger intended
(a rent whose answer was lost), flags what it does not know (recorded and shown, never destroyed
automatically), closes what is gone (a rent that never created anything closes as never created),
refreshes states and prices, and retries destroys that were not confirmed. All network calls come
first; every write then lands in one short transaction.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from rigdeck.core.cloud.actions import Clock, utc_now
from rigdeck.core.cloud.ledger import (
    Caps,
    Ledger,
    LedgerInstance,
    LedgerTx,
    RentIntent,
    StateChange,
)
from rigdeck.core.cloud.observe import apply_read, new_row
from rigdeck.core.cloud.provider import CloudError, Instance, Provider, RentRequest
from rigdeck.core.cloud.spend import usd_between

IN_FLIGHT_GRACE = timedelta(minutes=10)
"""A rent with no outcome whose sender still runs is left alone this long (its create may still
be on the wire); past it, or once its sender is gone, the provider's list decides."""
UNACCOUNTED = "unaccounted: created outside rigdeck or lost"


@dataclass(frozen=True)
class ReconcileReport:
    at: datetime
    listed: int
    """Instances in the provider's list (all pages)."""
    adopted: tuple[LedgerInstance, ...]
    unaccounted: tuple[LedgerInstance, ...]
    """Newly flagged this run (every open unaccounted row stays flagged in the ledger)."""
    closed: tuple[LedgerInstance, ...]
    never_created: tuple[str, ...]
    """Labels of rents that never created anything."""
    outbid: tuple[LedgerInstance, ...]
    """Interruptible instances newly stopped by the provider: storage still billing."""
    reopened: tuple[LedgerInstance, ...]
    destroy_retried: tuple[int, ...]
    state_changes: int
    balance_usd: float | None
    elapsed_s: float


def _sender_alive(intent: RentIntent) -> bool:
    if intent.data.get("host") != socket.gethostname() or intent.pid is None:
        return False
    if intent.pid == os.getpid():
        return True
    try:
        os.kill(intent.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_flight(intent: RentIntent, now: datetime) -> bool:
    """A create that may still be on the wire: its sender still waits for the answer."""
    return not intent.released and _sender_alive(intent) and now - intent.at < IN_FLIGHT_GRACE


def _first_step(row: LedgerInstance) -> StateChange:
    return StateChange(row.id, row.created_at, row.state, row.dph, row.storage_dph)


def _request_of(intent: RentIntent) -> RentRequest:
    d = intent.data
    return RentRequest(
        offer_id=int(d.get("offer_id") or 0),
        image=str(d.get("image") or ""),
        disk_gb=float(d.get("disk_gb") or 0.0),
        label=intent.label,
        bid=d.get("bid"),
    )


def _caps_of(intent: RentIntent) -> Caps:
    c = intent.data.get("caps") or {}
    return Caps(float(c.get("max_usd", 0)), float(c.get("max_hours", 0)), float(c.get("idle", 0)))


def _job_of(intent: RentIntent) -> str:
    # An older rigdeck's intent has no "job": it kept the job id in "project".
    if "job" in intent.data:
        return str(intent.data.get("job") or "")
    return str(intent.data.get("project") or "")


def _project_of(intent: RentIntent) -> str:
    return str(intent.data.get("project") or "") if "job" in intent.data else ""


def reconcile(
    provider: Provider,
    ledger: Ledger,
    *,
    clock: Clock = utc_now,
    retry_destroys: bool = True,
    read_credit: bool = True,
) -> ReconcileReport:
    """One pass; raises `ProviderUnavailable` (and changes nothing) when the list cannot be read."""
    started = time.monotonic()
    listed = list(provider.instances())
    by_id = {i.id: i for i in listed}
    before = {r.id: r for r in ledger.instances(open_only=True)}
    # A page the provider skipped must not close a live instance: ask for each missing one.
    confirmed_gone: set[int] = set()
    for instance_id in before.keys() - by_id.keys():
        try:
            read = provider.instance(instance_id)
        except CloudError:
            continue  # unknown this time; the next pass asks again
        if read is None:
            confirmed_gone.add(instance_id)
        else:
            by_id[instance_id] = read
            listed.append(read)
    retried = []
    if retry_destroys:
        for row in before.values():
            if row.state == "destroying" and row.id in by_id:
                try:
                    provider.destroy(row.id)
                    retried.append(row.id)
                except CloudError:
                    retried.append(row.id)
    balance = None
    if read_credit:
        try:
            balance = provider.credit().balance_usd
        except CloudError:
            balance = None
    now = clock()
    with ledger.write() as tx:
        report = _apply(tx, listed, by_id, confirmed_gone, now, balance)
    return replace(report, destroy_retried=tuple(retried), elapsed_s=time.monotonic() - started)


def _apply(
    tx: LedgerTx,
    listed: Sequence[Instance],
    by_id: dict[int, Instance],
    confirmed_gone: set[int],
    now: datetime,
    balance: float | None,
) -> ReconcileReport:
    rows = {r.id: r for r in tx.instances()}
    steps = tx.state_changes()
    intents = tx.rent_intents()
    by_label: dict[str, list[Instance]] = {}
    for inst in sorted(listed, key=lambda i: i.id):
        if inst.label:
            by_label.setdefault(inst.label, []).append(inst)
    adopted: list[LedgerInstance] = []
    unaccounted: list[LedgerInstance] = []
    closed: list[LedgerInstance] = []
    never: list[str] = []
    outbid: list[LedgerInstance] = []
    reopened: list[LedgerInstance] = []
    changes = 0

    # Rents the ledger intended: adopt exactly one instance per label, or close as never created.
    claimed: set[int] = set()
    for intent in intents:
        matches = [i for i in by_label.get(intent.label, []) if i.id not in rows]
        if intent.outcome_ok is True and intent.instance_id is not None:
            claimed.add(intent.instance_id)
            continue
        if matches:
            inst = matches[0]
            row = new_row(
                inst, source="adopted", now=now, request=_request_of(intent),
                caps=_caps_of(intent), project=_project_of(intent), job=_job_of(intent),
            )  # fmt: skip
            tx.put_instance(row)
            rows[row.id] = row
            steps[row.id] = [_first_step(row)]
            claimed.add(row.id)
            adopted.append(row)
            changes += 1
            if intent.outcome_ok is None:
                tx.outcome(
                    intent.intent_seq, at=now, ok=True, instance_id=inst.id,
                    detail=f"adopted instance {inst.id}: the create's answer was lost",
                )  # fmt: skip
            else:
                tx.observed(
                    "adopt", at=now, instance_id=inst.id, label=intent.label,
                    detail=f"a create recorded as failed did happen: instance {inst.id} adopted",
                )  # fmt: skip
        elif intent.outcome_ok is None and not _in_flight(intent, now):
            tx.outcome(
                intent.intent_seq, at=now, ok=False,
                detail=f"never created: no instance labelled {intent.label} at the provider",
            )  # fmt: skip
            never.append(intent.label)

    for inst in listed:
        known = rows.get(inst.id)
        if known is None:
            row = new_row(inst, source="unaccounted", now=now)
            tx.put_instance(row)
            rows[row.id] = row
            why = UNACCOUNTED
            if (
                inst.id not in claimed
                and inst.label
                and any(i.label == inst.label for i in intents)
            ):
                why = f"unaccounted: a second instance labelled {inst.label} (a duplicate create)"
            tx.observed("unaccounted", at=now, instance_id=inst.id, label=inst.label, detail=why)
            unaccounted.append(row)
            continue
        row = known
        if not row.open:
            # Closed here but listed there: the close was wrong, and it bills again from now.
            row = replace(row, closed_at=None, closed_reason=None, state=inst.state)
            reopened.append(row)
            tx.observed(
                "reopen", at=now, instance_id=inst.id, label=inst.label,
                detail="listed again by the provider after the ledger closed it",
            )  # fmt: skip
        history = steps.get(row.id, [])
        fresh, step = apply_read(row, inst, now, history[-1] if history else None)
        tx.put_instance(fresh)
        if step is not None:
            tx.state_change(step)
            steps.setdefault(row.id, []).append(step)
            changes += 1
        if fresh.outbid and not row.outbid:
            outbid.append(fresh)
            tx.observed(
                "outbid", at=now, instance_id=row.id, label=row.label,
                detail=f"outbid: stopped, storage still billing ${fresh.storage_dph:.4f}/h",
            )  # fmt: skip
        rows[row.id] = fresh

    for instance_id in confirmed_gone:
        row = rows[instance_id]
        if row.state == "destroying":
            tx.close(
                instance_id, at=now, state="destroyed", reason="destroy confirmed by reconcile"
            )
            tx.observed(
                "destroy", at=now, instance_id=instance_id, label=row.label,
                detail="destroy confirmed: the provider no longer has it",
            )  # fmt: skip
        else:
            tx.close(instance_id, at=now, state="gone", reason="gone at the provider")
            tx.observed(
                "gone", at=now, instance_id=instance_id, label=row.label,
                detail="no longer at the provider (not destroyed by rigdeck)",
            )  # fmt: skip
        gone = tx.instance(instance_id)
        assert gone is not None
        closed.append(gone)
        rows[instance_id] = gone

    tx.set_usd(
        (r.id, usd_between(r, steps.get(r.id, []), end=now))
        for r in rows.values()
        if r.open or r.id in confirmed_gone
    )
    if balance is not None:
        tx.record_credit(now, balance)
    return ReconcileReport(
        at=now,
        listed=len(listed),
        adopted=tuple(adopted),
        unaccounted=tuple(unaccounted),
        closed=tuple(closed),
        never_created=tuple(never),
        outbid=tuple(outbid),
        reopened=tuple(reopened),
        destroy_retried=(),
        state_changes=changes,
        balance_usd=balance,
        elapsed_s=0.0,
    )
