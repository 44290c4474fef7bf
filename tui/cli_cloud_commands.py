"""The `rigdeck cloud` actions behind the parsers in cli_cloud.py (imported on first use)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.budgets import reached_for
from rigdeck.core.cloud.ledger import Caps
from rigdeck.core.cloud.offer_fit import fit_offers, load_model
from rigdeck.core.cloud.provider import CloudError, Offer, RentRequest, new_label
from rigdeck.core.cloud.reconcile import reconcile
from rigdeck.core.cloud.spend import check_against_credit, summarize
from rigdeck.core.config import PROJECT_TAG_RULE, Settings, is_project_tag
from rigdeck.core.errors import ConfigError
from rigdeck.tui import cli_cloud_views as views
from rigdeck.tui import words
from rigdeck.tui.cloud_context import (
    CloudSession,
    ledger_path,
    open_session,
    start_guard,
    usd_so_far,
)

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2


# -- plumbing -----------------------------------------------------------------------------------
def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _simulated(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "cloud_simulate", False) or getattr(args, "simulate", False))


def _print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2))


def _refuse(message: str) -> int:
    from rich.markup import escape

    _console(stderr=True).print(f"[bold yellow]rigdeck: {escape(message)}[/]")
    return EXIT_NO


def _banner(session: CloudSession, as_json: bool) -> None:
    if session.simulated and not as_json:
        _console(stderr=True).print("[reverse] SIMULATED [/] simulated account, no money moves")


def _ask(lines: list[str], question: str) -> bool:
    console = _console(stderr=True)
    for line in lines:
        console.print(line, markup=False)
    console.print(f"{question} [y/N] ", end="", markup=False)
    try:
        answer = sys.stdin.readline()
    except (OSError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in {"y", "yes"}


def _now() -> datetime:
    return datetime.now(UTC)


def run_cloud(args: argparse.Namespace, settings: Settings) -> int:
    if args.cloud_command == "guard":
        return _guard(args, settings)
    session = open_session(settings, simulate=_simulated(args))
    handler = {
        "offers": _offers,
        "rent": _rent,
        "ls": _ls,
        "down": _down,
        "stop": _stop_start,
        "start": _stop_start,
        "reconcile": _reconcile,
        "ledger": _ledger,
    }[args.cloud_command]
    _banner(session, bool(getattr(args, "json", False)))
    return handler(args, settings, session)


# -- offers ---------------------------------------------------------------------------------------
def _offers(args: argparse.Namespace, settings: Settings, session: CloudSession) -> int:
    found = list(
        session.provider.search_offers(
            args.query, sort=args.sort, interruptible=args.interruptible, limit=args.limit
        )
    )
    fits = {}
    if args.fits:
        from rigdeck.core.models.launch import build_run_settings

        model = load_model(args.fits, settings.models.dirs)
        fits = fit_offers(
            model, found, build_run_settings(settings.models), disk_gb=settings.cloud.disk_gb
        )
    disk = settings.cloud.disk_gb
    if args.json:
        _print_json(
            {
                "offers": [views.offer_json(o, fits.get(o.id), disk_gb=disk) for o in found],
                "simulated": session.simulated,
            }
        )
        return EXIT_OK
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for header in views.OFFER_HEADERS + (["fits " + args.fits] if args.fits else []):
        table.add_column(header)
    for offer in found:
        cells = views.offer_cells(offer, fits.get(offer.id), interruptible=args.interruptible)
        table.add_row(*cells)
    console = _console()
    console.print(table)
    if not found:
        console.print("no offers match; loosen the query")
    return EXIT_OK


# -- rent -----------------------------------------------------------------------------------------
def _find_offer(session: CloudSession, offer_id: int, interruptible: bool) -> Offer:
    found = session.provider.search_offers(f"id={offer_id}", interruptible=interruptible, limit=1)
    if not found:
        raise CloudError(
            f"offer {offer_id} is not available (rented, unverified or gone); "
            "search again with `rigdeck cloud offers`"
        )
    return found[0]


def _rent(args: argparse.Namespace, settings: Settings, session: CloudSession) -> int:
    cloud = settings.cloud
    if settings.telemetry.read_only:
        return _refuse("read-only mode: renting is disabled")
    project = args.project
    if project and not is_project_tag(project):
        raise ConfigError(f"--project {project!r}: not a project tag; {PROJECT_TAG_RULE}")
    offer = _find_offer(session, args.offer_id, args.bid is not None)
    request = RentRequest(
        offer_id=offer.id,
        image=args.image or cloud.image,
        disk_gb=args.disk if args.disk is not None else cloud.disk_gb,
        label=args.label or new_label(),
        bid=args.bid,
    )
    caps = Caps(
        max_usd=args.max_usd if args.max_usd is not None else cloud.max_usd,
        max_hours=args.max_hours if args.max_hours is not None else cloud.max_hours,
        idle_minutes=cloud.idle_minutes,
    )
    ledger = session.ledger
    rows, steps, now = ledger.instances(), ledger.state_changes(), _now()
    summary = summarize(rows, steps, now)
    over = reached_for(rows, steps, cloud, now, project)
    if over:
        return _refuse(views.over_budget_words(over[0]))
    lines = views.rent_lines(
        offer,
        disk_gb=request.disk_gb,
        bid=request.bid,
        max_usd=caps.max_usd,
        max_hours=caps.max_hours,
        month_usd=summary.month_usd,
        monthly_budget=cloud.monthly_budget_usd,
        cli=actions.cli_rent(request),
        project=project,
    )
    if not args.yes and not _ask(lines, "Rent it?"):
        return _refuse("not rented")
    row = actions.rent(session.provider, ledger, request, caps=caps, project=project)
    guard_pid = None if args.no_guard else start_guard(session, args.config)
    if args.json:
        _print_json(
            {
                "instance": row.id,
                "label": row.label,
                "state": row.state,
                "dph": row.dph,
                "storage_dph": row.storage_dph,
                "project": row.project,
                "guard_pid": guard_pid,
                "simulated": session.simulated,
            }
        )
    else:
        guard = "" if guard_pid is None else f"; budget guard running (pid {guard_pid})"
        _console().print(
            f"rented instance {row.id} ({row.label}), {row.state}, "
            f"{views.per_hour(row.dph)} + storage {views.per_hour(row.storage_dph)}{guard}",
            markup=False,
        )
    return EXIT_OK


# -- ls, reconcile, ledger ------------------------------------------------------------------------
def _ls(args: argparse.Namespace, settings: Settings, session: CloudSession) -> int:
    reconcile(session.provider, session.ledger)
    rows = session.ledger.instances(open_only=True)
    steps = session.ledger.state_changes()
    now = _now()
    if args.json:
        _print_json(
            {
                "instances": [views.instance_json(r, steps, now) for r in rows],
                "simulated": session.simulated,
            }
        )
        return EXIT_OK
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for header in views.INSTANCE_HEADERS:
        table.add_column(header)
    for row in rows:
        table.add_row(*views.instance_cells(row, steps, now))
    console = _console()
    console.print(table if rows else "no instances")
    summary = summarize(session.ledger.instances(), steps, now)
    console.print(views.summary_line(summary, settings.cloud.monthly_budget_usd), markup=False)
    return EXIT_OK


def _reconcile(args: argparse.Namespace, settings: Settings, session: CloudSession) -> int:
    report = reconcile(session.provider, session.ledger)
    if args.json:
        _print_json({**views.reconcile_json(report), "simulated": session.simulated})
    else:
        _console().print(views.reconcile_line(report), markup=False)
    return EXIT_OK


def _ledger(args: argparse.Namespace, settings: Settings, session: CloudSession) -> int:
    ledger = session.ledger
    rows = ledger.instances()
    steps = ledger.state_changes()
    summary = summarize(rows, steps, _now())
    events = ledger.events(limit=args.limit or None)
    if args.json:
        credit = check_against_credit(ledger.credits(), rows, steps)
        data = views.ledger_json(rows, steps, summary, events, credit)
        _print_json({**data, "simulated": session.simulated})
        return EXIT_OK
    console = _console()
    for row in rows:
        console.print("  ".join(views.instance_cells(row, steps, summary.at)), markup=False)
    console.print(views.summary_line(summary, settings.cloud.monthly_budget_usd), markup=False)
    for event in events:
        mark = {True: "ok", False: "FAILED", None: ""}[event.ok]
        console.print(
            f"{event.at:%Y-%m-%d %H:%M:%S} {event.kind:<8} {event.action:<10} "
            f"{event.instance_id or '':<9} {mark:<6} {event.detail}",
            markup=False,
        )
    return EXIT_OK


# -- down, stop, start ----------------------------------------------------------------------------
def _known_row(session: CloudSession, instance_id: int) -> Any:
    row = session.ledger.instance(instance_id)
    if row is None or not row.open:
        # An instance made elsewhere (or lost) is in the ledger once a reconcile has seen it.
        reconcile(session.provider, session.ledger)
        row = session.ledger.instance(instance_id)
    if row is None:
        raise CloudError(f"no instance {instance_id} at the provider or in the ledger")
    return row


def _down(args: argparse.Namespace, settings: Settings, session: CloudSession) -> int:
    if settings.telemetry.read_only:
        return _refuse("read-only mode: destroying is disabled")
    row = _known_row(session, args.instance)
    if not row.open:
        return _refuse(f"instance {row.id} is already {row.state.replace('_', ' ')}")
    steps = session.ledger.state_changes([row.id])
    usd = usd_so_far(row, steps, _now())
    lines = views.destroy_lines(row, usd, action="destroy", cli=actions.cli_line("destroy", row.id))
    if not args.yes and not _ask(lines, "Destroy it?"):
        return _refuse("not destroyed")
    done = actions.destroy(session.provider, session.ledger, row.id)
    steps = session.ledger.state_changes([row.id])
    total = usd_so_far(done, steps, _now())
    if args.json:
        _print_json({"instance": done.id, "label": done.label, "state": done.state,
                     "usd_total": round(total, 6), "simulated": session.simulated})  # fmt: skip
    else:
        _console().print(
            f"destroyed instance {done.id}: the provider reads it gone; it cost "
            f"{words.money(total)}",
            markup=False,
        )
    return EXIT_OK


def _stop_start(args: argparse.Namespace, settings: Settings, session: CloudSession) -> int:
    action = args.cloud_command
    if settings.telemetry.read_only:
        return _refuse(f"read-only mode: {action} is disabled")
    _known_row(session, args.instance)
    call = actions.stop if action == "stop" else actions.start
    row = call(session.provider, session.ledger, args.instance)
    if args.json:
        _print_json({"instance": row.id, "label": row.label, "state": row.state,
                     "simulated": session.simulated})  # fmt: skip
    else:
        note = (
            f"; storage still bills {views.per_hour(row.storage_dph)}" if action == "stop" else ""
        )
        _console().print(f"instance {row.id}: {row.state}{note}", markup=False)
    return EXIT_OK


# -- guard ----------------------------------------------------------------------------------------
def _guard(args: argparse.Namespace, settings: Settings) -> int:
    from rigdeck.core.cloud import guard
    from rigdeck.tui.cloud_context import SIMULATED_FACTORY

    simulate = _simulated(args)
    argv = ["--ledger", str(ledger_path(simulate))]
    if simulate:
        argv += ["--factory", SIMULATED_FACTORY]
    if args.config:
        argv += ["--config", str(args.config)]
    if args.once:
        argv.append("--once")
    return guard.main(argv)
