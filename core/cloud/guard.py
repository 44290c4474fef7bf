"""The budget guard: per-instance caps, daily and monthly budgets, outbid instances.

Each tick reads the provider's list (a reconcile), decides from the ledger's figures (pure
`decide`), and acts through `actions.py`, recording what it did and why in the ledger. At 80% of a
cap it warns once; at the cap it does what ``[cloud] on_cap`` says (warn, stop or destroy). It
never acts on an unaccounted instance (one rigdeck did not create): it warns about it.
A project's budget (``[cloud.projects.TAG]``) warns at 80% and alerts at 100%, once per day or
month; with ``on_budget = "stop"`` it also stops that project's running instances, never
another's, and never destroys (the total's ``on_cap`` still applies to the total).
`run_guard` ticks every ``poll_s``; ``python -m rigdeck.core.cloud.guard`` is the detached runner
(`spawn_guard` / `find_guard` in ``guard_process.py``), which exits once nothing is open.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.actions import Backoff, Clock, utc_now
from rigdeck.core.cloud.budgets import budget_uses
from rigdeck.core.cloud.guard_process import (
    DEFAULT_FACTORY,
    find_guard,
    guard_log_path,
    hold_guard_lock,
    spawn_guard,
)
from rigdeck.core.cloud.ledger import Ledger, LedgerInstance, StateChange
from rigdeck.core.cloud.provider import CloudError, Provider, ProviderUnavailable
from rigdeck.core.cloud.reconcile import reconcile
from rigdeck.core.cloud.spend import burn_dph, usd_between
from rigdeck.core.config import CloudSettings, Settings, load_settings
from rigdeck.core.secrets import RedactingFilter

__all__ = [
    "GuardAction",
    "GuardDecision",
    "decide",
    "find_guard",
    "guard_tick",
    "run_guard",
    "seconds_to_next_cap",
    "spawn_guard",
]

log = logging.getLogger("rigdeck.cloud.guard")

WARN_AT = 0.8
GUARD_DESTROY = Backoff(attempts=3, first_s=0.5, factor=2.0, max_s=4.0)
"""Short: a tick must finish within its poll; an unconfirmed destroy is retried next tick."""
CROSSING_MARGIN_S = 0.05
"""Woken this long after a predicted crossing, so the figures read past the cap, not at it."""
RUNNING_STATES = frozenset({"running", "loading", "created"})
Rule = Literal[
    "max_usd",
    "max_hours",
    "idle",
    "monthly_budget",
    "daily_budget",
    "project_monthly_budget",
    "project_daily_budget",
    "unaccounted",
]
Do = Literal["warn", "stop", "destroy"]


@dataclass(frozen=True)
class GuardDecision:
    """What the guard should do, decided from values alone."""

    rule: Rule
    do: Do
    instance_id: int | None
    reason: str
    key: str
    """Recorded with the event; a warning whose key is already recorded is not repeated."""


@dataclass(frozen=True)
class GuardAction:
    """What the guard did this tick (also in the ledger as a ``guard`` event)."""

    at: datetime
    rule: str
    action: Literal["warn", "stop", "destroy", "report"]
    instance_id: int | None
    reason: str
    ok: bool = True
    error: str | None = None


def _usd(x: float) -> str:
    """Cents for ordinary sums; more digits for tiny caps, so a reason never reads "$0.00"."""
    return f"${x:.2f}" if abs(x) >= 1 or x == 0 else f"${x:.4g}"


def _cap(own: float, default: float) -> float:
    return own if own > 0 else default


def _guarded(rows: Sequence[LedgerInstance]) -> list[LedgerInstance]:
    """The open rentals the guard answers for: rigdeck's own, not already on their way out."""
    return [r for r in rows if r.open and r.source != "unaccounted" and r.state != "destroying"]


def decide(
    rows: Sequence[LedgerInstance],
    steps: dict[int, list[StateChange]],
    settings: CloudSettings,
    now: datetime,
    recorded: set[tuple[int | None, str]],
) -> list[GuardDecision]:
    """Pure: the warnings and actions the caps and budgets call for at ``now``."""
    out: list[GuardDecision] = []
    on_cap: Do = settings.on_cap if settings.on_cap in ("warn", "stop", "destroy") else "stop"  # type: ignore[assignment]

    def add(rule: Rule, row: LedgerInstance | None, level: str, reason: str, do: Do) -> None:
        iid = None if row is None else row.id
        if row is not None and level == "cap" and do == "stop" and row.state not in RUNNING_STATES:
            do, level = "warn", "stopped"
            reason += f"; already stopped, storage still bills ${row.storage_dph:.4f}/h"
        key = f"{rule}@{level}"
        if do == "warn" and (iid, key) in recorded:
            return
        out.append(GuardDecision(rule, do, iid, reason, key))

    guarded = _guarded(rows)
    for row in guarded:
        usd = usd_between(row, steps.get(row.id, []), end=now)
        cap = _cap(row.caps.max_usd, settings.max_usd)
        if cap > 0 and usd >= cap:
            add("max_usd", row, "cap", f"${usd:.2f} spent, cap ${cap:.2f}", on_cap)
        elif cap > 0 and usd >= WARN_AT * cap:
            add(
                "max_usd", row, "80", f"${usd:.2f} spent, {usd / cap:.0%} of cap ${cap:.2f}", "warn"
            )
        hours = (now - row.created_at).total_seconds() / 3600
        cap = _cap(row.caps.max_hours, settings.max_hours)
        if cap > 0 and hours >= cap:
            add("max_hours", row, "cap", f"{hours:.2f} h since creation, cap {cap:g} h", on_cap)
        elif cap > 0 and hours >= WARN_AT * cap:
            add("max_hours", row, "80", f"{hours:.2f} h of cap {cap:g} h", "warn")
        idle = _cap(row.caps.idle_minutes, settings.idle_minutes)
        if idle > 0 and row.state == "running" and row.busy_at is not None:
            minutes = (now - row.busy_at).total_seconds() / 60
            if minutes >= idle:
                add("idle", row, "cap", f"GPUs idle {minutes:.0f} min, cap {idle:g} min", on_cap)

    for use in budget_uses(rows, steps, settings, now):
        label = use.period_label
        if use.project is None:
            rule: Rule = "monthly_budget" if use.period == "month" else "daily_budget"
            scope, level = "", label
        else:
            rule = "project_monthly_budget" if use.period == "month" else "project_daily_budget"
            scope, level = f"project {use.project}: ", f"{use.project}:{label}"
        spent, budget = use.spent_usd, use.budget_usd
        if use.reached:
            reason = f"{scope}{_usd(spent)} spent {label}, budget {_usd(budget)}"
            if use.project is None:
                targets = guarded if on_cap != "warn" else []
                do: Do = on_cap
            else:
                # A project's budget never destroys: at most it stops that project's running
                # instances (their disks survive), and only when its table says so.
                stop = settings.projects[use.project].on_budget == "stop"
                targets = [
                    r
                    for r in guarded
                    if stop and r.project == use.project and r.state in RUNNING_STATES
                ]
                do = "stop"
            if not targets:
                add(rule, None, f"cap:{level}", reason, "warn")
            for row in targets:
                add(rule, row, f"cap:{level}", reason, do)
        elif spent >= WARN_AT * budget:
            reason = (
                f"{scope}{_usd(spent)} spent {label}, {use.fraction:.0%} of budget {_usd(budget)}"
            )
            add(rule, None, f"80:{level}", reason, "warn")

    for row in rows:
        if row.open and row.source == "unaccounted":
            add(
                "unaccounted", row, "seen",
                f"instance {row.id} is not rigdeck's (created outside it or lost) and bills "
                f"${row.dph + row.storage_dph:.3f}/h; rigdeck never destroys it",
                "warn",
            )  # fmt: skip
    return out


def seconds_to_next_cap(
    rows: Sequence[LedgerInstance],
    steps: dict[int, list[StateChange]],
    settings: CloudSettings,
    now: datetime,
) -> float | None:
    """Pure: when, at today's burn rates, the next cap or budget is crossed (None: never).

    Billing is continuous, so a crossing can be seen coming: the guard wakes for it instead of
    waiting out the rest of its poll interval.
    """
    soonest: list[float] = []
    guarded = _guarded(rows)
    for row in guarded:
        history = steps.get(row.id, [])
        burn = burn_dph(row, history)
        usd = usd_between(row, history, end=now)
        cap = _cap(row.caps.max_usd, settings.max_usd)
        if cap > 0 and usd < cap and burn > 0:
            soonest.append((cap - usd) / burn * 3600)
        cap = _cap(row.caps.max_hours, settings.max_hours)
        age = (now - row.created_at).total_seconds()
        if cap > 0 and age < cap * 3600:
            soonest.append(cap * 3600 - age)
        idle = _cap(row.caps.idle_minutes, settings.idle_minutes)
        if idle > 0 and row.state == "running" and row.busy_at is not None:
            left = idle * 60 - (now - row.busy_at).total_seconds()
            if left > 0:
                soonest.append(left)
    for use in budget_uses(rows, steps, settings, now):
        if use.burn_dph > 0 and not use.reached:
            soonest.append((use.budget_usd - use.spent_usd) / use.burn_dph * 3600)
    return min(soonest) if soonest else None


def guard_tick(
    provider: Provider,
    ledger: Ledger,
    settings: CloudSettings,
    now: datetime,
    *,
    clock: Clock | None = None,
) -> list[GuardAction]:
    """One guard pass at ``now``: reconcile, decide, act, record. Raises `ProviderUnavailable`
    when the provider's list cannot be read (nothing is decided on stale figures)."""
    tick_clock = clock or (lambda: now)
    report = reconcile(provider, ledger, clock=tick_clock)
    done: list[GuardAction] = [
        GuardAction(
            now,
            "outbid",
            "report",
            row.id,
            f"instance {row.id} was outbid: stopped, storage still billing "
            f"${row.storage_dph:.4f}/h",
        )
        for row in report.outbid
    ]
    rows = ledger.instances()
    recorded = ledger.guard_rules_recorded(since=now - timedelta(days=40))
    acted: set[int] = set()
    for d in decide(rows, ledger.state_changes(), settings, now, recorded):
        if d.do != "warn" and d.instance_id in acted:
            continue  # one action per instance per tick, whichever rule came first
        done.append(_carry_out(provider, ledger, d, now, tick_clock))
        if d.do != "warn" and d.instance_id is not None:
            acted.add(d.instance_id)
    return done


def _carry_out(
    provider: Provider, ledger: Ledger, d: GuardDecision, now: datetime, clock: Clock
) -> GuardAction:
    error = None
    if d.do != "warn" and d.instance_id is not None:
        try:
            if d.do == "stop":
                actions.stop(provider, ledger, d.instance_id, clock=clock)
            else:
                actions.destroy(
                    provider, ledger, d.instance_id, clock=clock, backoff=GUARD_DESTROY,
                    reason=f"guard: {d.rule}: {d.reason}",
                )  # fmt: skip
        except CloudError as exc:
            error = str(exc)
    with ledger.write() as tx:
        tx.guard(
            d.do, at=now, instance_id=d.instance_id, ok=error is None,
            detail=f"{d.rule}: {d.reason}" + (f" — failed: {error}" if error else ""),
            data={"rule": d.key, "reason": d.reason},
        )  # fmt: skip
    return GuardAction(now, d.rule, d.do, d.instance_id, d.reason, error is None, error)


def run_guard(
    provider_factory: Callable[[], Provider],
    ledger_path: Path | None,
    settings: CloudSettings,
    *,
    stop_event: threading.Event | None = None,
    once: bool = False,
    clock: Clock = utc_now,
    on_tick: Callable[[list[GuardAction]], None] | None = None,
) -> int:
    """Tick every ``poll_s`` until ``stop_event`` is set or the ledger holds nothing open (then it
    returns by itself); the number of ticks run. A tick starts ``poll_s`` after the last one
    started, so a cap crossed between ticks is acted on within one poll interval."""
    stop = stop_event or threading.Event()
    provider = provider_factory()
    ledger = Ledger(ledger_path)
    ticks = 0
    while not stop.is_set():
        started = time.monotonic()
        now = clock()
        try:
            done = guard_tick(provider, ledger, settings, now)
        except ProviderUnavailable as exc:
            log.warning("provider unavailable, trying again next poll: %s", exc)
            done = []
        ticks += 1
        for a in done:
            log.info("%s %s %s: %s", a.action, a.rule, a.instance_id, a.reason)
        if on_tick is not None:
            on_tick(done)
        if once or not ledger.has_open():
            break
        wait = settings.poll_s - (time.monotonic() - started)
        ahead = seconds_to_next_cap(ledger.instances(), ledger.state_changes(), settings, now)
        if ahead is not None:
            # Wake just after the predicted crossing (measured from the tick's own reading).
            wait = min(wait, ahead + CROSSING_MARGIN_S - (time.monotonic() - started))
        stop.wait(max(0.0, wait))
    return ticks


def _load_factory(spec: str) -> Callable[[Settings], Provider]:
    module, _, name = spec.partition(":")
    factory: Callable[[Settings], Provider] = getattr(importlib.import_module(module), name)
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of the detached guard process (``python -m rigdeck.core.cloud.guard``)."""
    parser = argparse.ArgumentParser(prog="rigdeck cloud guard")
    parser.add_argument("--ledger", type=Path, default=None)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--factory", default=DEFAULT_FACTORY, help="module:function(Settings)")
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--simulate", action="store_true", help="guard the simulated account")
    args = parser.parse_args(argv)
    handler = logging.FileHandler(guard_log_path(), encoding="utf-8")
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    lock = hold_guard_lock()
    if lock is None:
        log.info("another guard runs (pid %s); leaving it to that one", find_guard())
        return 0
    try:
        settings = load_settings(args.config)
        factory = _load_factory(args.factory)
        log.info("guard started, polling every %g s", settings.cloud.poll_s)
        ticks = run_guard(lambda: factory(settings), args.ledger, settings.cloud, once=args.once)
        log.info("guard done after %d ticks: nothing open in the ledger", ticks)
        return 0
    except CloudError as exc:
        log.error("guard stopped: %s", exc)
        return 2
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
