"""The instances list: state, $/h, accrued $, a budget bar and age, one row per open instance."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from rigdeck.core.cloud.ledger import LedgerInstance, StateChange
from rigdeck.core.config import CloudSettings
from rigdeck.tui import words
from rigdeck.tui.cli_cloud_views import per_hour
from rigdeck.tui.cloud_context import usd_so_far
from rigdeck.tui.panes.cloud.controller import InstancesView
from rigdeck.tui.panes.cloud.tables import Cell, KeyedTable

COLUMNS = ("id", "state", "GPUs", "$/h", "so far", "budget", "age")
BAR = 8


def state_text(row: LedgerInstance) -> Text:
    """What the user must know first: outbid and stopped rows still bill, unaccounted ones are
    not rigdeck's, a destroy not yet confirmed is still "destroying"."""
    if row.outbid:
        return Text("stopped, storage still billing (outbid: b rebid, x destroy)", style="bold red")
    if row.source == "unaccounted":
        return Text(f"{row.state} · unaccounted", style="bold yellow")
    if row.state == "destroying":
        return Text("destroying", style="yellow")
    if row.state == "stopped":
        return Text("stopped, storage still billing", style="yellow")
    if row.state == "running":
        return Text("running", style="green")
    return Text(row.state.replace("_", " "))


def budget_bar(usd: float, cap: float) -> Text:
    if cap <= 0:
        return Text("no cap", style="dim")
    share = min(usd / cap, 1.0)
    filled = round(share * BAR)
    style = "red" if share >= 0.8 else ("yellow" if share >= 0.5 else "green")
    return Text.assemble(
        ("█" * filled, style), ("░" * (BAR - filled), "dim"), f" {usd / cap:>4.0%}"
    )


def instance_cells(
    row: LedgerInstance, steps: dict[int, list[StateChange]], now: datetime, cloud: CloudSettings
) -> list[Cell]:
    usd = usd_so_far(row, steps, now)
    cap = row.caps.max_usd if row.caps.max_usd > 0 else cloud.max_usd
    return [
        str(row.id),
        state_text(row),
        f"{row.num_gpus}x {row.gpu_name}" if row.gpu_name else "-",
        per_hour(row.dph + row.storage_dph if row.state != "stopped" else row.storage_dph),
        words.money(usd),
        budget_bar(usd, cap),
        words.duration((now - row.created_at).total_seconds()),
    ]


class InstancesTable(KeyedTable):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(COLUMNS, **kwargs)
        self.view: InstancesView | None = None

    def show(self, view: InstancesView, cloud: CloudSettings) -> None:
        self.view = view
        self.show_rows(
            [(str(r.id), instance_cells(r, view.steps, view.at, cloud)) for r in view.rows]
        )

    def selected_instance(self) -> LedgerInstance | None:
        key = self.selected_key()
        if key is None or self.view is None:
            return None
        return next((r for r in self.view.rows if str(r.id) == key), None)
