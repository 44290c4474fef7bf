"""Provider actions wrapped in the ledger: every face (pane, CLI, guard) calls these.

Each action commits its intent before the provider is called and its outcome after, with the
equivalent CLI line. A create is sent once: when its answer is lost it is found again by its
unique label, never re-sent. A destroy counts only once the provider reads the instance as gone;
until then the ledger says ``destroying`` and the next reconcile or guard tick tries again.
"""

from __future__ import annotations

import os
import shlex
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rigdeck.core.cloud.ledger import Caps, Ledger, LedgerInstance, LedgerTx, Source
from rigdeck.core.cloud.observe import apply_read, new_row, unread_row
from rigdeck.core.cloud.provider import (
    CloudError,
    CreateUncertain,
    Instance,
    InstanceGone,
    Provider,
    ProviderUnavailable,
    RentRequest,
)
from rigdeck.core.cloud.spend import usd_between

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Backoff:
    """Bounded waits between tries: ``attempts`` tries in all, waits growing by ``factor``."""

    attempts: int = 5
    first_s: float = 1.0
    factor: float = 2.0
    max_s: float = 15.0

    def waits(self) -> Iterator[float]:
        """The wait before each try (0 before the first)."""
        wait = self.first_s
        for n in range(self.attempts):
            yield 0.0 if n == 0 else wait
            if n:
                wait = min(wait * self.factor, self.max_s)


FIND_BY_LABEL = Backoff(attempts=8, first_s=1.0, factor=1.5, max_s=8.0)
DESTROY = Backoff(attempts=5, first_s=1.0, factor=2.0, max_s=15.0)


class NotInLedger(CloudError):
    """The instance is not one the ledger knows."""


# -- the equivalent CLI lines (no credentials in them) -----------------------------------------


def cli_rent(request: RentRequest) -> str:
    parts = ["vastai", "create", "instance", str(request.offer_id), "--image", request.image]
    parts += ["--disk", f"{request.disk_gb:g}", "--label", request.label]
    if request.bid is not None:
        parts += ["--bid_price", f"{request.bid:g}"]
    if request.ssh:
        parts.append("--ssh")
    return shlex.join(parts)


def cli_line(action: str, instance_id: int, bid: float | None = None) -> str:
    if action == "change_bid":
        return f"vastai change bid {instance_id} --price {bid:g}"
    return f"vastai {action} instance {instance_id}"


# -- rent ----------------------------------------------------------------------------------------


def rent(
    provider: Provider,
    ledger: Ledger,
    request: RentRequest,
    *,
    caps: Caps,
    project: str = "",
    job: str = "",
    clock: Clock = utc_now,
    find: Backoff = FIND_BY_LABEL,
) -> LedgerInstance:
    """Create one instance and record it; `CreateUncertain` only when it may exist unseen.

    ``project`` is the user's tag (spend and budgets per project); ``job`` the job it is rented
    for (how the job finds it again after a crash). Both go into the intent, so an instance
    adopted later by its label keeps them."""
    data: dict[str, Any] = {
        "offer_id": request.offer_id,
        "image": request.image,
        "disk_gb": request.disk_gb,
        "bid": request.bid,
        "caps": {"max_usd": caps.max_usd, "max_hours": caps.max_hours, "idle": caps.idle_minutes},
        "project": project,
        "job": job,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    with ledger.write() as tx:
        if any(r.label == request.label for r in tx.rent_intents()):
            raise CloudError(
                f"label {request.label} was already used by an earlier create; "
                "each create needs a new label (provider.new_label())"
            )
        seq = tx.intent(
            "rent",
            at=clock(),
            label=request.label,
            detail=f"rent offer {request.offer_id} ({request.image}, {request.disk_gb:g} GB)",
            data=data,
            cli=cli_rent(request),
        )
    try:
        instance_id = provider.rent(request)
    except CreateUncertain:
        found = find_by_label(provider, request.label, find)
        if found is None:
            ledger.observed(
                "rent",
                at=clock(),
                label=request.label,
                detail="the create got no answer and no instance carries its label yet; "
                "the next reconcile adopts it if it appears",
                data={"released": True},
            )
            raise CreateUncertain(
                f"the create labelled {request.label} got no answer and is not listed yet; it "
                "may still appear and bill: run `rigdeck cloud reconcile` in a minute",
                label=request.label,
            ) from None
        return _record_created(
            ledger, seq, request, found.id, found, source="adopted", caps=caps, project=project,
            job=job, now=clock(),
            detail="the create got no answer; found by its label and adopted",
        )  # fmt: skip
    except CloudError as exc:
        ledger.outcome(seq, at=clock(), ok=False, detail=f"create refused: {exc}")
        raise
    try:
        read = provider.instance(instance_id)
    except CloudError:
        read = None  # created for sure; the next reconcile fills in what this read would have
    return _record_created(
        ledger, seq, request, instance_id, read, source="rigdeck", caps=caps, project=project,
        job=job, now=clock(), detail=f"created instance {instance_id}",
    )  # fmt: skip


def find_by_label(provider: Provider, label: str, backoff: Backoff) -> Instance | None:
    """The instance carrying ``label`` (lowest id if a duplicate exists), polling a bounded time."""
    for wait in backoff.waits():
        time.sleep(wait)
        try:
            matches = [i for i in provider.instances() if i.label == label]
        except ProviderUnavailable:
            continue
        if matches:
            return min(matches, key=lambda i: i.id)
    return None


def _record_created(
    ledger: Ledger,
    seq: int,
    request: RentRequest,
    instance_id: int,
    read: Instance | None,
    *,
    source: Source,
    caps: Caps,
    project: str,
    job: str,
    now: datetime,
    detail: str,
) -> LedgerInstance:
    if read is not None:
        row = new_row(
            read, source=source, now=now, request=request, caps=caps, project=project, job=job
        )
    else:
        row = unread_row(
            instance_id, request, source=source, now=now, caps=caps, project=project, job=job
        )
    with ledger.write() as tx:
        # The outcome and the row land together; if a reconcile got there first (it adopted the
        # label), its row stands and this answer is not written twice.
        if tx.outcome(seq, at=now, ok=True, instance_id=instance_id, detail=detail) is not None:
            tx.put_instance(row)
        existing = tx.instance(instance_id)
    assert existing is not None
    return existing


# -- stop, start, change bid -------------------------------------------------------------------


def stop(
    provider: Provider, ledger: Ledger, instance_id: int, *, clock: Clock = utc_now
) -> LedgerInstance:
    """Stop the machine's billing; its storage keeps billing until it is destroyed."""
    return _simple(provider, ledger, instance_id, "stop", provider.stop, clock=clock)


def start(
    provider: Provider, ledger: Ledger, instance_id: int, *, clock: Clock = utc_now
) -> LedgerInstance:
    return _simple(provider, ledger, instance_id, "start", provider.start, clock=clock)


def change_bid(
    provider: Provider, ledger: Ledger, instance_id: int, bid: float, *, clock: Clock = utc_now
) -> LedgerInstance:
    return _simple(
        provider, ledger, instance_id, "change_bid", lambda i: provider.change_bid(i, bid),
        clock=clock, bid=bid,
    )  # fmt: skip


def _known(ledger: Ledger, instance_id: int) -> LedgerInstance:
    row = ledger.instance(instance_id)
    if row is None:
        raise NotInLedger(
            f"instance {instance_id} is not in the ledger; run `rigdeck cloud reconcile` first"
        )
    return row


def _simple(
    provider: Provider,
    ledger: Ledger,
    instance_id: int,
    action: str,
    call: Callable[[int], None],
    *,
    clock: Clock,
    bid: float | None = None,
) -> LedgerInstance:
    row = _known(ledger, instance_id)
    if not row.open:
        raise CloudError(f"instance {instance_id} is already {row.state.replace('_', ' ')}")
    detail = f"{action.replace('_', ' ')} instance {instance_id}"
    seq = ledger.intent(
        action, at=clock(), label=row.label, instance_id=instance_id,
        detail=detail if bid is None else f"{detail} to ${bid:g}/h",
        data={} if bid is None else {"bid": bid}, cli=cli_line(action, instance_id, bid),
    )  # fmt: skip
    try:
        call(instance_id)
    except InstanceGone as exc:
        with ledger.write() as tx:
            tx.outcome(seq, at=clock(), ok=False, detail=str(exc))
            tx.close(instance_id, at=clock(), state="gone", reason="gone at the provider")
        raise
    except CloudError as exc:
        ledger.outcome(seq, at=clock(), ok=False, detail=str(exc))
        raise
    try:
        read = provider.instance(instance_id)
    except CloudError:
        read = None
    now = clock()
    with ledger.write() as tx:
        tx.outcome(seq, at=now, ok=True, detail=f"{detail}: done")
        if read is not None:
            record_read(tx, row, read, now)
    return _known(ledger, instance_id)


def record_read(tx: LedgerTx, row: LedgerInstance, read: Instance, now: datetime) -> None:
    """Write the provider's read of a known row, with a billing step if the rates moved."""
    steps = tx.state_changes([row.id]).get(row.id, [])
    updated, step = apply_read(row, read, now, steps[-1] if steps else None)
    tx.put_instance(updated)
    if step is not None:
        tx.state_change(step)
    refresh_usd(tx, row.id, now)


def refresh_usd(tx: LedgerTx, instance_id: int, now: datetime) -> None:
    """Store the row's $ so far (a cache for quick display; the timeline stays the truth)."""
    row = tx.instance(instance_id)
    if row is not None:
        steps = tx.state_changes([instance_id]).get(instance_id, [])
        tx.set_usd([(instance_id, usd_between(row, steps, end=now))])


# -- readiness -------------------------------------------------------------------------------


def wait_running(
    provider: Provider,
    ledger: Ledger,
    instance_id: int,
    *,
    timeout_s: float,
    poll_s: float = 2.0,
    clock: Clock = utc_now,
) -> LedgerInstance:
    """Poll until the provider reads it ``running``; the ledger follows every read.

    Raises with the provider's last message when it is not running in ``timeout_s``; the instance
    is left as it is (it bills while loading: the message says how to destroy it).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        row = _known(ledger, instance_id)
        read = provider.instance(instance_id)
        now = clock()
        if read is None:
            with ledger.write() as tx:
                tx.close(instance_id, at=now, state="gone", reason="gone while starting")
            raise InstanceGone(f"instance {instance_id} disappeared while starting")
        with ledger.write() as tx:
            record_read(tx, row, read, now)
        if read.state == "running":
            return _known(ledger, instance_id)
        if time.monotonic() >= deadline:
            message = f" ({read.status_message})" if read.status_message else ""
            raise CloudError(
                f"instance {instance_id} is still {read.state}{message} after {timeout_s:g} s and "
                f"bills while it waits; destroy it with `{cli_line('destroy', instance_id)}` "
                "or wait longer"
            )
        time.sleep(poll_s)


# -- destroy ---------------------------------------------------------------------------------


def destroy(
    provider: Provider,
    ledger: Ledger,
    instance_id: int,
    *,
    clock: Clock = utc_now,
    backoff: Backoff = DESTROY,
    reason: str = "destroyed on request",
) -> LedgerInstance:
    """Destroy and confirm: done only when the provider reads the instance as gone."""
    row = _known(ledger, instance_id)
    if not row.open:
        return row
    with ledger.write() as tx:
        seq = tx.intent(
            "destroy", at=clock(), label=row.label, instance_id=instance_id,
            detail=f"destroy instance {instance_id}: {reason}",
            cli=cli_line("destroy", instance_id),
        )  # fmt: skip
        tx.set_state(instance_id, "destroying")
    last: Exception | None = None
    tries = 0
    for wait in backoff.waits():
        time.sleep(wait)
        tries += 1
        try:
            try:
                provider.destroy(instance_id)
            except InstanceGone:
                pass
            gone = provider.instance(instance_id) is None
        except CloudError as exc:
            last = exc
            ledger.observed(
                "destroy", at=clock(), instance_id=instance_id, label=row.label,
                detail=f"try {tries} failed: {exc}",
            )  # fmt: skip
            continue
        if gone:
            now = clock()
            with ledger.write() as tx:
                tx.outcome(seq, at=now, ok=True, detail=f"confirmed gone after {tries} tries")
                tx.close(instance_id, at=now, state="destroyed", reason=reason)
                refresh_usd(tx, instance_id, now)
            return _known(ledger, instance_id)
        last = CloudError("the provider still lists it")
    ledger.outcome(seq, at=clock(), ok=False, detail=f"not confirmed after {tries} tries: {last}")
    raise CloudError(
        f"instance {instance_id} is not confirmed destroyed after {tries} tries ({last}); it may "
        "still bill. The ledger keeps it as destroying and the next reconcile or guard tick "
        f"retries; or run `{cli_line('destroy', instance_id)}`"
    )
