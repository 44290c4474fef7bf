"""The cloud pane's rent dialog with a project tag, driven by keys (Pilot) against the project's
Vast simulator: a tagged rental is costed under its project, a bad tag is one line and leaves
nothing to rent, and a reached budget refuses the rental in the words of `rigdeck cloud rent`.

The simulator's clock and the pane's stand at fixed instants (moved only by the test), so what a
rental has spent is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.cloud_app import cloud_app, cloud_ready, until
from support.vast_sim import TEST_API_KEY, make_provider
from textual.widgets import Button, Input, Static

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.budgets import reached_for
from rigdeck.core.cloud.ledger import Caps, Ledger
from rigdeck.core.cloud.provider import RentRequest
from rigdeck.core.cloud.simulator import Simulator
from rigdeck.core.config import CloudSettings, ProjectBudget
from rigdeck.core.economics.cloud_spend import read_cloud_spend
from rigdeck.tui.cli_cloud_views import over_budget_words
from rigdeck.tui.panes.cloud.rent_dialog import RentDialog, parse_project

T0 = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
SIZE = (120, 40)


class Clock:
    """The pane's clock: stands at ``at`` until the test moves it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def fixed_sim() -> Iterator[Simulator]:
    with Simulator(clock=lambda: T0.timestamp(), seed=0, api_key=TEST_API_KEY) as sim:
        yield sim


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


def error_line(dialog: RentDialog) -> str | None:
    """The dialog's error line as shown, None while hidden."""
    error = dialog.query_one("#rent-error", Static)
    return None if error.has_class("-empty") else str(error.render())


def body(dialog: RentDialog) -> str:
    return str(dialog.query_one("#rent-body", Static).render())


async def open_dialog(pilot) -> RentDialog:
    await pilot.press("r")
    await until(pilot, lambda: isinstance(pilot.app.screen, RentDialog), what="rent dialog")
    return pilot.app.screen


async def type_project(pilot, tag: str) -> None:
    """From Cancel (where focus starts), Shift+Tab to the project field and type ``tag``."""
    await pilot.press("shift+tab")
    assert pilot.app.focused is pilot.app.screen.query_one("#rent-project")
    await pilot.press(*tag)
    await pilot.pause()


def spent_a_while_ago(tmp_path: Path, sim: Simulator, project: str) -> tuple[Path, float]:
    """A ledger holding one rental tagged ``project``, made at T0 and running 40 minutes; the
    ledger's path and what it has spent by then."""
    provider = make_provider(sim)
    offer = provider.search_offers("num_gpus=1")[0]
    path = tmp_path / "ledger.sqlite3"
    request = RentRequest(offer.id, "pytorch/pytorch:latest", 20, label="rigdeck-seed-0001")
    actions.rent(provider, Ledger(path), request, caps=Caps(), project=project, clock=lambda: T0)
    sim.advance(40 * 60)
    spent = read_cloud_spend(Ledger(path), T0 + timedelta(minutes=40)).summary.total.day.value
    assert spent is not None and spent > 0
    return path, spent


def test_a_typed_project_is_blank_or_a_tag_and_a_bad_one_says_the_rule():
    assert parse_project("") == "" and parse_project("   ") == ""
    assert parse_project(" thesis ") == "thesis" and parse_project("vision-2.b_1") == "vision-2.b_1"
    for bad in ("my thesis", "-lead", "x" * 33, "é"):
        with pytest.raises(ValueError, match="is not a project tag; use letters"):
            parse_project(bad)


async def test_a_rental_tagged_in_the_dialog_is_costed_under_its_project(tmp_path, fixed_sim):
    clock = Clock(T0)
    path = tmp_path / "ledger.sqlite3"
    app = cloud_app(tmp_path, make_provider(fixed_sim), clock=clock, ledger_path=path)
    async with app.run_test(size=SIZE) as pilot:
        pane = await cloud_ready(pilot)
        dialog = await open_dialog(pilot)
        assert "Project:" not in body(dialog)  # untagged until one is typed
        await type_project(pilot, "thesis")
        assert error_line(dialog) is None
        assert "Project: thesis (its spend and budgets: rigdeck cost)" in body(dialog)
        await pilot.press("enter")  # Enter in the field goes back to Cancel, never rents
        assert dialog.query_one("#rent-cancel", Button).has_focus
        assert fixed_sim.create_count == 0
        polls = pane.polls
        await pilot.press("tab", "enter")
        await until(pilot, lambda: pane.polls > polls and pane.instances_view.rows, what="row")
        [made] = fixed_sim.instances()
        assert any(f"rented instance {made['id']}" in n and "project thesis" in n
                   for n in notes(app))  # fmt: skip

    row = Ledger(path).instance(made["id"])
    assert row is not None and row.project == "thesis"
    # An hour later the ledger bills that hour to the project (what `rigdeck cost` shows).
    fixed_sim.advance(3600)
    spend = read_cloud_spend(Ledger(path), T0 + timedelta(hours=1)).summary
    mine = spend.by_project["thesis"]
    assert mine.day.source == "ledger"
    assert mine.day.value == pytest.approx(row.dph + row.storage_dph, rel=1e-6)
    assert mine.month.value == pytest.approx(mine.day.value)
    assert spend.total.day.value == pytest.approx(mine.day.value)


async def test_a_bad_project_tag_is_one_line_and_disables_rent(tmp_path, fixed_sim):
    app = cloud_app(tmp_path, make_provider(fixed_sim), clock=Clock(T0))
    async with app.run_test(size=SIZE) as pilot:
        await cloud_ready(pilot)
        dialog = await open_dialog(pilot)
        await type_project(pilot, "my thesis")
        error = error_line(dialog)
        assert error is not None and "\n" not in error
        assert error.startswith("project: 'my thesis' is not a project tag; use letters, digits")
        ok = dialog.query_one("#rent-ok", Button)
        assert ok.disabled
        await pilot.press("enter")  # back to Cancel
        assert dialog.query_one("#rent-cancel", Button).has_focus
        await pilot.press("tab")  # a disabled Rent takes no focus
        assert isinstance(app.focused, Input)  # round to the first field instead
        await pilot.press("enter")  # and Enter in a field is Cancel's again
        await pilot.pause()
        assert app.screen is dialog and fixed_sim.create_count == 0

        # Fixed, the tag is shown and Rent is back.
        await type_project(pilot, "")
        await pilot.press(*["backspace"] * len("my thesis"), *"thesis")
        await pilot.pause()
        assert error_line(dialog) is None
        assert not dialog.query_one("#rent-ok", Button).disabled
        assert "Project: thesis" in body(dialog)


async def test_a_project_over_its_budget_is_refused_in_the_clis_words(tmp_path, fixed_sim):
    path, spent = spent_a_while_ago(tmp_path, fixed_sim, "thesis")
    budgets = {"thesis": {"daily_budget_usd": spent / 2, "on_budget": "stop"}}
    now = T0 + timedelta(minutes=40)
    app = cloud_app(tmp_path, make_provider(fixed_sim), clock=Clock(now), ledger_path=path,
                    overrides={"cloud.projects": budgets})  # fmt: skip
    # The words `rigdeck cloud rent --project thesis` refuses with on this ledger.
    ledger = Ledger(path)
    cloud = CloudSettings(
        projects={"thesis": ProjectBudget(daily_budget_usd=spent / 2, on_budget="stop")}
    )
    [use] = reached_for(ledger.instances(), ledger.state_changes(), cloud, now, "thesis")
    words = over_budget_words(use)
    assert words.startswith("over budget: project thesis $") and "[cloud.projects.thesis]" in words

    async with app.run_test(size=SIZE) as pilot:
        pane = await cloud_ready(pilot)
        await open_dialog(pilot)  # untagged, so nothing is reached yet
        await type_project(pilot, "thesis")
        await pilot.press("tab", "tab", "enter")
        await until(pilot, lambda: words in notes(app), what="the refusal")
        assert not isinstance(app.screen, RentDialog)
        assert fixed_sim.create_count == 1  # the seeded rental only
        assert len(fixed_sim.instances()) == 1
        assert not any(n.startswith("rented instance") for n in notes(app))

        # Another project (or none) is not held back by this one's budget.
        polls = pane.polls
        await open_dialog(pilot)
        await type_project(pilot, "other")
        await pilot.press("tab", "tab", "enter")
        await until(pilot, lambda: pane.polls > polls and len(pane.instances_view.rows) == 2)
        assert fixed_sim.create_count == 2
    assert sorted(r.project for r in Ledger(path).instances()) == ["other", "thesis"]


async def test_a_reached_total_budget_refuses_before_the_dialog(tmp_path, fixed_sim):
    path, spent = spent_a_while_ago(tmp_path, fixed_sim, "")
    app = cloud_app(tmp_path, make_provider(fixed_sim), clock=Clock(T0 + timedelta(minutes=40)),
                    ledger_path=path, overrides={"cloud.daily_budget_usd": spent / 2})  # fmt: skip
    async with app.run_test(size=SIZE) as pilot:
        await cloud_ready(pilot)
        await pilot.press("r")
        await until(pilot, lambda: any(n.startswith("over budget: ") for n in notes(app)))
        [note] = [n for n in notes(app) if n.startswith("over budget: ")]
        assert note.endswith("raise the budget in [cloud] to rent") and "\n" not in note
        assert " spent today of " in note
        assert not isinstance(app.screen, RentDialog)
        assert fixed_sim.create_count == 1
