"""What `rigdeck cloud` prints: the JSON contracts (documented in the README) and the text
tables, from core values. No provider calls here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rigdeck.core.cloud.budgets import BudgetUse
from rigdeck.core.cloud.ledger import LedgerEvent, LedgerInstance, StateChange, iso, job_of
from rigdeck.core.cloud.offer_fit import OfferFit
from rigdeck.core.cloud.provider import Offer
from rigdeck.core.cloud.reconcile import ReconcileReport
from rigdeck.core.cloud.spend import CreditCheck, SpendSummary
from rigdeck.tui import words
from rigdeck.tui.cloud_context import public_source, usd_so_far


def per_hour(usd: float | None) -> str:
    """``$0.41/h``; a rate under a cent keeps three decimals (``$0.004/h``)."""
    return "-" if usd is None else f"{words.money(usd)}/h"


# -- JSON ---------------------------------------------------------------------------------------
def offer_json(offer: Offer, fit: OfferFit | None, *, disk_gb: float) -> dict[str, Any]:
    return {
        "id": offer.id,
        "gpu_name": offer.gpu_name,
        "num_gpus": offer.num_gpus,
        "gpu_ram_bytes": offer.gpu_ram_bytes,
        "dph": offer.dph,
        "storage_dph": round(offer.storage_dph(disk_gb), 6),
        "reliability": offer.reliability,
        "inet_down_mbps": offer.inet_down_mbps,
        "tflops": offer.tflops,
        "interruptible_min_bid": offer.interruptible_min_bid,
        "cpu_ram_bytes": offer.cpu_ram_bytes,
        "cpu_cores": offer.cpu_cores,
        "location": offer.location,
        "read_at": iso(offer.read_at),
        "fit": None if fit is None else fit.to_json(),
    }


def instance_json(
    row: LedgerInstance, steps: dict[int, list[StateChange]], now: datetime
) -> dict[str, Any]:
    return {
        "id": row.id,
        "label": row.label,
        "state": row.state,
        "gpu_name": row.gpu_name,
        "num_gpus": row.num_gpus,
        "dph": row.dph,
        "storage_dph": row.storage_dph,
        "usd_so_far": round(usd_so_far(row, steps, now), 6),
        "created_at": iso(row.created_at),
        "closed_at": None if row.closed_at is None else iso(row.closed_at),
        "source": public_source(row),
        "interruptible": row.interruptible,
        "bid": row.bid,
        "outbid": row.outbid,
        "status_message": row.status_message,
        "project": row.project,
        "job": job_of(row) or None,
    }


def event_json(event: LedgerEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": iso(event.at),
        "kind": event.kind,
        "action": event.action,
        "label": event.label,
        "instance_id": event.instance_id,
        "ok": event.ok,
        "detail": event.detail,
        "cli": event.cli,
    }


def reconcile_json(report: ReconcileReport) -> dict[str, Any]:
    return {
        "at": iso(report.at),
        "listed": report.listed,
        "adopted": [r.id for r in report.adopted],
        "unaccounted": [r.id for r in report.unaccounted],
        "closed": [r.id for r in report.closed],
        "never_created": list(report.never_created),
        "outbid": [r.id for r in report.outbid],
        "reopened": [r.id for r in report.reopened],
        "destroy_retried": list(report.destroy_retried),
        "state_changes": report.state_changes,
        "balance_usd": report.balance_usd,
        "elapsed_s": round(report.elapsed_s, 3),
    }


def ledger_json(
    rows: Sequence[LedgerInstance],
    steps: dict[int, list[StateChange]],
    summary: SpendSummary,
    events: Sequence[LedgerEvent],
    credit: CreditCheck | None = None,
) -> dict[str, Any]:
    return {
        "instances": [instance_json(r, steps, summary.at) for r in rows],
        "total_usd": round(summary.total_usd, 6),
        "month_usd": round(summary.month_usd, 6),
        "today_usd": round(summary.today_usd, 6),
        "burn_dph": round(summary.burn_dph, 6),
        "by_project": {k: round(v, 6) for k, v in summary.by_project.items()},
        "credit_check": None
        if credit is None
        else {
            "start": iso(credit.start),
            "end": iso(credit.end),
            "provider_usd": round(credit.provider_usd, 6),
            "ledger_usd": round(credit.ledger_usd, 6),
            "difference_usd": round(credit.difference_usd, 6),
            "agrees": credit.agrees(),
        },
        "events": [event_json(e) for e in events],
    }


# -- text ---------------------------------------------------------------------------------------
def offer_cells(offer: Offer, fit: OfferFit | None, *, interruptible: bool) -> list[str]:
    price = offer.interruptible_min_bid if interruptible else offer.dph
    tflops = "-" if not offer.tflops else f"{offer.tflops:.0f}"
    per_tflop = "-" if not offer.tflops else words.money(offer.dph / offer.tflops)
    cells = [
        str(offer.id),
        f"{offer.num_gpus}x {offer.gpu_name}",
        words.size(offer.gpu_ram_bytes),
        per_hour(price),
        tflops,
        per_tflop,
        f"{offer.reliability:.1%}",
        f"{offer.inet_down_mbps:.0f}",
    ]
    if fit is not None:
        cells.append(fit_cell(fit))
    return cells


OFFER_HEADERS = ["id", "GPUs", "VRAM", "$/h", "TFLOPS", "$/TFLOP·h", "reliab.", "down Mb/s"]


def fit_cell(fit: OfferFit) -> str:
    p = fit.placement
    if not p.fits:
        return "no fit"
    where = words.verdict(p)
    cost = "" if fit.usd_per_mtok is None else f" {words.money(fit.usd_per_mtok)}/Mtok"
    return f"{where}, {words.tps(p.decode_tps)} tok/s{cost}"


def instance_cells(
    row: LedgerInstance, steps: dict[int, list[StateChange]], now: datetime
) -> list[str]:
    age = words.duration((now - row.created_at).total_seconds())
    return [
        str(row.id),
        row.label or "-",
        state_words(row),
        f"{row.num_gpus}x {row.gpu_name}" if row.gpu_name else "-",
        per_hour(row.dph),
        words.money(usd_so_far(row, steps, now)),
        age,
    ]


INSTANCE_HEADERS = ["id", "label", "state", "GPUs", "$/h", "so far", "age"]


def state_words(row: LedgerInstance) -> str:
    """How an instance's state reads: outbid and unaccounted rows say what they cost."""
    if row.outbid:
        return "stopped, storage still billing (outbid)"
    if row.source == "unaccounted" and row.open:
        return f"{row.state} · unaccounted"
    if row.state == "stopped":
        return "stopped, storage still billing"
    return row.state.replace("_", " ")


def summary_line(summary: SpendSummary, monthly_budget: float) -> str:
    budget = f" of {words.money(monthly_budget)} budget" if monthly_budget > 0 else ""
    return (
        f"burning {per_hour(summary.burn_dph)} · today {words.money(summary.today_usd)} · "
        f"this month {words.money(summary.month_usd)}{budget} · total "
        f"{words.money(summary.total_usd)}"
    )


def reconcile_line(report: ReconcileReport) -> str:
    parts = [f"{report.listed} listed"]
    for name, values in (
        ("adopted", report.adopted),
        ("unaccounted", report.unaccounted),
        ("closed", report.closed),
        ("outbid", report.outbid),
    ):
        if values:
            parts.append(f"{len(values)} {name}")
    if report.never_created:
        parts.append(f"{len(report.never_created)} never created")
    return "reconciled: " + ", ".join(parts)


def totals(rows: Mapping[str, float]) -> str:
    return ", ".join(f"{k or 'untagged'} {words.money(v)}" for k, v in rows.items())


# -- what a rent or a destroy costs, said before the key that confirms ------------------------
def rent_lines(
    offer: Offer,
    *,
    disk_gb: float,
    bid: float | None,
    max_usd: float,
    max_hours: float,
    month_usd: float,
    monthly_budget: float,
    cli: str,
    project: str = "",
) -> list[str]:
    """The confirmation's words: the machine, $/h, storage $/h, the caps and the month so far."""
    storage = offer.storage_dph(disk_gb)
    if bid is None:
        price = f"{per_hour(offer.dph)} while running"
    else:
        price = f"bid {per_hour(bid)} (interruptible: stops when outbid)"
    caps = []
    if max_usd > 0:
        caps.append(f"stop at {words.money(max_usd)}")
    if max_hours > 0:
        caps.append(f"stop after {max_hours:g} h")
    budget = (
        f"{words.money(month_usd)} spent this month of {words.money(monthly_budget)}"
        if monthly_budget > 0
        else f"{words.money(month_usd)} spent this month (no monthly budget set)"
    )
    return [
        f"Rent offer {offer.id}: {offer.num_gpus}x {offer.gpu_name} "
        f"{words.size(offer.gpu_ram_bytes)}, {offer.location}",
        f"GPU: {price}",
        f"Storage: {per_hour(storage)} for {disk_gb:g} GB, billed until destroyed",
        f"Caps: {', '.join(caps) if caps else 'none (--max-usd, --max-hours, [cloud] max_usd)'}",
        f"Budget: {budget}",
        *([f"Project: {project} (its spend and budgets: rigdeck cost)"] if project else []),
        f"CLI: {cli}",
    ]


def over_budget_words(use: BudgetUse) -> str:
    """Why a rental is refused: the budget it would run over, and where that budget is set."""
    period = "today" if use.period == "day" else "this month"
    spent = f"{words.money(use.spent_usd)} spent {period} of {words.money(use.budget_usd)}"
    if use.project is None:
        return f"over budget: {spent}; raise the budget in [cloud] to rent"
    return (
        f"over budget: project {use.project} {spent}; raise it in "
        f"[cloud.projects.{use.project}] to rent"
    )


def destroy_lines(row: LedgerInstance, usd: float, *, action: str, cli: str) -> list[str]:
    """The words for stop, start or destroy: what it costs now and what changes."""
    what = {
        "destroy": "Destroy",
        "stop": "Stop",
        "start": "Start",
    }[action]
    after = {
        "destroy": "billing ends once the provider reads it gone; its disk is deleted",
        "stop": f"storage keeps billing {per_hour(row.storage_dph)} until destroyed",
        "start": f"bills {per_hour(row.dph + row.storage_dph)} again while running",
    }[action]
    return [
        f"{what} instance {row.id} ({row.label or 'no label'}): "
        f"{row.num_gpus}x {row.gpu_name or '?'}, {state_words(row)}",
        f"Now: {per_hour(row.dph)} GPU + {per_hour(row.storage_dph)} storage, "
        f"{words.money(usd)} so far",
        f"After: {after}",
        f"CLI: {cli}",
    ]
