"""How a provider's read of an instance becomes, or updates, the ledger's row for it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from rigdeck.core.cloud.ledger_values import Caps, LedgerInstance, Source, StateChange
from rigdeck.core.cloud.provider import Instance, RentRequest

BUSY_UTIL = 0.05
"""GPU utilisation above this counts as in use (the idle cap counts from the last such read)."""
RUNNING = frozenset({"running"})


def new_row(
    inst: Instance,
    *,
    source: Source,
    now: datetime,
    request: RentRequest | None = None,
    offer_id: int | None = None,
    caps: Caps | None = None,
    project: str = "",
    job: str = "",
) -> LedgerInstance:
    """A first ledger row for an instance the provider just listed or created."""
    return LedgerInstance(
        id=inst.id,
        label=inst.label if inst.label is not None else (request.label if request else None),
        source=source,
        state=inst.state,
        created_at=inst.created_at or now,
        gpu_name=inst.gpu_name,
        num_gpus=inst.num_gpus,
        dph=inst.dph,
        storage_dph=inst.storage_dph,
        image=inst.image or (request.image if request else None),
        disk_gb=inst.disk_gb or (request.disk_gb if request else 0.0),
        bid=inst.bid if inst.bid is not None else (request.bid if request else None),
        interruptible=inst.interruptible or bool(request and request.bid is not None),
        offer_id=offer_id if offer_id is not None else (request.offer_id if request else None),
        caps=caps or Caps(),
        project=project,
        gpu_util=inst.gpu_util,
        busy_at=now,
        seen_at=now,
        status_message=inst.status_message,
        outbid=inst.outbid,
        job=job,
    )


def unread_row(
    instance_id: int,
    request: RentRequest,
    *,
    source: Source,
    now: datetime,
    caps: Caps,
    project: str,
    job: str = "",
) -> LedgerInstance:
    """A row for a create whose instance could not be read back yet (reconcile fills it in)."""
    return LedgerInstance(
        id=instance_id,
        label=request.label,
        source=source,
        state="created",
        created_at=now,
        image=request.image,
        disk_gb=request.disk_gb,
        bid=request.bid,
        interruptible=request.bid is not None,
        offer_id=request.offer_id,
        caps=caps,
        project=project,
        busy_at=now,
        job=job,
    )


def apply_read(
    row: LedgerInstance, inst: Instance, now: datetime, last_step: StateChange | None
) -> tuple[LedgerInstance, StateChange | None]:
    """The row after the provider's read at ``now``, and a billing step if the state it bills by
    or a rate moved since ``last_step`` (the row's latest).

    A row being destroyed keeps saying ``destroying`` (what the user must know) while its billing
    timeline follows the provider's state underneath.
    """
    state = "destroying" if row.state == "destroying" else inst.state
    was_running = last_step is not None and last_step.state in RUNNING
    busy = inst.gpu_util is None or inst.gpu_util > BUSY_UTIL
    started = inst.state in RUNNING and not was_running
    updated = replace(
        row,
        state=state,
        gpu_name=inst.gpu_name or row.gpu_name,
        num_gpus=inst.num_gpus or row.num_gpus,
        dph=inst.dph,
        storage_dph=inst.storage_dph,
        bid=inst.bid if inst.bid is not None else row.bid,
        interruptible=inst.interruptible or row.interruptible,
        created_at=inst.created_at or row.created_at,
        gpu_util=inst.gpu_util,
        busy_at=now if (busy or started or row.busy_at is None) else row.busy_at,
        seen_at=now,
        status_message=inst.status_message,
        outbid=inst.outbid,
    )
    step = StateChange(row.id, now, inst.state, inst.dph, inst.storage_dph)
    if last_step is not None and (last_step.state, last_step.dph, last_step.storage_dph) == (
        step.state,
        step.dph,
        step.storage_dph,
    ):
        return updated, None
    return updated, step
