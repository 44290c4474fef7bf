"""Cloud pane snapshots at 80x24 and 160x48: offers, instances with spend and budget bars, the
audit log, the rent and destroy dialogs, the SIMULATED banner and the missing-key message.

Deterministic: the simulator's clock stands at a fixed instant (seed 0 catalogue), the ledger's
and the pane's clocks are fixed, and the create's label is fixed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support.cloud_app import cloud_app, cloud_ready, until
from support.vast_sim import TEST_API_KEY, make_provider

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.ledger import Caps, Ledger
from rigdeck.core.cloud.provider import RentRequest
from rigdeck.core.cloud.simulator import Simulator
from rigdeck.tui.panes.cloud.confirm import CloudConfirmScreen
from rigdeck.tui.panes.cloud.instances import InstancesTable
from rigdeck.tui.panes.cloud.rent_dialog import RentDialog

T0 = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
SIZES = [(80, 24), (160, 48)]


@pytest.fixture
def fixed_sim() -> Iterator[Simulator]:
    with Simulator(clock=lambda: T0.timestamp(), seed=0, api_key=TEST_API_KEY) as sim:
        yield sim


def rented_app(tmp_path, sim: Simulator, *, simulate: bool = True):
    """One instance rented by rigdeck 40 minutes ago with a $2 cap, now running."""
    provider = make_provider(sim)
    offer = provider.search_offers("num_gpus=1")[0]
    request = RentRequest(offer.id, "pytorch/pytorch:latest", 20, label="rigdeck-snap-0001")
    ledger = tmp_path / "ledger.sqlite3"
    actions.rent(
        provider, Ledger(ledger), request, caps=Caps(max_usd=2.0), clock=lambda: T0
    )  # fmt: skip
    sim.advance(40 * 60)
    return cloud_app(
        tmp_path,
        provider,
        simulate=simulate,
        clock=lambda: T0 + timedelta(minutes=40),
        new_label=lambda: "rigdeck-snap-0002",
        ledger_path=ledger,
    )


async def settle(pilot) -> None:
    await cloud_ready(pilot)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    # Column widths follow the rows: draw the headers again once the rows are in.
    for table in pilot.app.query("#cloud-pane DataTable"):
        table.refresh()
    await pilot.pause()
    for timer in list(pilot.app._timers):
        timer.stop()
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
def test_offers_and_instances_simulated(snap_compare, tmp_path, fixed_sim, size):
    app = rented_app(tmp_path, fixed_sim)
    assert snap_compare(app, terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_rent_dialog(snap_compare, tmp_path, fixed_sim, size):
    async def open_rent(pilot):
        await settle(pilot)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(pilot.app.screen, RentDialog))
        await pilot.pause()

    app = rented_app(tmp_path, fixed_sim)
    assert snap_compare(app, terminal_size=size, run_before=open_rent)


def test_destroy_dialog(snap_compare, tmp_path, fixed_sim):
    async def open_destroy(pilot):
        await settle(pilot)
        pilot.app.query_one(InstancesTable).focus()
        await pilot.press("x")
        await until(pilot, lambda: isinstance(pilot.app.screen, CloudConfirmScreen))
        await pilot.pause()

    app = rented_app(tmp_path, fixed_sim, simulate=False)
    assert snap_compare(app, terminal_size=(80, 24), run_before=open_destroy)


def test_missing_key(snap_compare, tmp_path, monkeypatch):
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    # The message names where the key goes: a path that is the same on every run.
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent/rigdeck-snapshot/config")

    async def shown(pilot):
        await pilot.press("4")
        pane = pilot.app.query_one("#cloud-pane")
        await until(pilot, lambda: pane.missing is not None)
        await pilot.pause()

    app = cloud_app(tmp_path, None)
    assert snap_compare(app, terminal_size=(80, 24), run_before=shown)
