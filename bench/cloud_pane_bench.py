"""The cloud pane's side of bench/cloud_money.py: the app headless (``run_test``), timed.

- Instances list: the pane drawing N ledger rows (first draw, then a poll's redraw of the same
  rows with new figures), beside a bare Textual DataTable filled with the same cells.
- Offers search to first rendered row: from the search request (the query submitted) to the
  first row drawn, beside the provider's search call alone in the same run.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.cloud_app import cloud_app, cloud_ready  # noqa: E402
from support.vast_sim import TEST_API_KEY, make_provider  # noqa: E402
from textual.app import App, ComposeResult  # noqa: E402
from textual.widgets import DataTable  # noqa: E402

from rigdeck.core.cloud.ledger import LedgerInstance  # noqa: E402
from rigdeck.core.cloud.simulator import Simulator  # noqa: E402
from rigdeck.core.cloud.spend import summarize  # noqa: E402
from rigdeck.core.config import CloudSettings  # noqa: E402
from rigdeck.tui.panes.cloud.controller import InstancesView  # noqa: E402
from rigdeck.tui.panes.cloud.instances import COLUMNS, InstancesTable, instance_cells  # noqa: E402

SIZE = (160, 48)


def _view(rows: list[LedgerInstance], at: datetime) -> InstancesView:
    return InstancesView(tuple(rows), {}, summarize(rows, {}, at), (), None, at)


class _Bare(App[None]):
    def compose(self) -> ComposeResult:
        yield DataTable(id="bare")


async def _bare_table(cells: list[list[Any]]) -> float:
    app = _Bare()
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(DataTable)
        table.add_columns(*COLUMNS)
        await pilot.pause()
        t0 = time.perf_counter()
        for n, row in enumerate(cells):
            table.add_row(*row, key=str(n))
        await pilot.pause()
        return time.perf_counter() - t0


async def _pane_table(rows: list[LedgerInstance]) -> tuple[float, float]:
    # The pane on an empty simulated account and a ledger of its own (never the user's); once
    # its first poll has landed it is handed the view to draw.
    with (
        tempfile.TemporaryDirectory(prefix="rigdeck-bench-pane-") as tmp,
        Simulator(seed=0, api_key=TEST_API_KEY) as sim,
    ):
        app = cloud_app(Path(tmp), make_provider(sim), ledger_path=Path(tmp) / "ledger.sqlite3")
        async with app.run_test(size=SIZE) as pilot:
            pane = await cloud_ready(pilot)
            table = pane.query_one(InstancesTable)
            at = datetime.now(UTC)
            t0 = time.perf_counter()
            pane.show_instances(_view(rows, at))
            await pilot.pause()
            first = time.perf_counter() - t0
            assert table.row_count == len(rows)
            # A poll later: every row's $ so far and age moved.
            later = [replace(r, usd=r.usd + 0.01) for r in rows]
            t0 = time.perf_counter()
            pane.show_instances(_view(later, datetime.now(UTC)))
            await pilot.pause()
            again = time.perf_counter() - t0
            return first, again


def render_instances(rows: list[LedgerInstance]) -> dict[str, float]:
    """Seconds: the pane's first draw and redraw of ``rows``, and a bare DataTable's fill."""
    first, again = asyncio.run(_pane_table(rows))
    at = datetime.now(UTC)
    cells = [instance_cells(r, {}, at, CloudSettings()) for r in rows]
    bare = asyncio.run(_bare_table(cells))
    return {"first": first, "redraw": again, "bare": bare}


async def _search(provider: Any, query: str, rounds: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="rigdeck-bench-pane-") as tmp:
        app = cloud_app(Path(tmp), provider, ledger_path=Path(tmp) / "ledger.sqlite3")
        async with app.run_test(size=SIZE) as pilot:
            pane = await cloud_ready(pilot)
            best_pane = best_call = float("inf")
            for _ in range(rounds):
                t0 = time.perf_counter()
                provider.search_offers(query, limit=50)
                best_call = min(best_call, time.perf_counter() - t0)

                searches = pane.searches
                pane.query_one("#cloud-offers").clear_rows()
                await pilot.pause()
                t0 = time.perf_counter()
                pane.query_text = query
                pane.run_search()
                while pane.searches == searches:  # finer than `until`: this is the figure
                    await pilot.pause(0.001)
                await pilot.pause()  # the rows drawn
                best_pane = min(best_pane, time.perf_counter() - t0)
                assert pane.query_one("#cloud-offers").row_count > 0
            return best_pane, best_call


def offers_to_first_row(provider: Any, query: str = "num_gpus=1", rounds: int = 3) -> list[str]:
    """The figures as report lines: the pane from request to drawn rows, beside the call."""
    pane_s, call_s = asyncio.run(_search(provider, query, rounds))
    return [
        f"offers search to first rendered row ({query!r}, 50 offers), best of {rounds}:",
        f"  provider search alone    {call_s * 1000:8.1f} ms",
        f"  pane: request to drawn   {pane_s * 1000:8.1f} ms   ({pane_s / call_s:.2f}x the call)",
    ]
