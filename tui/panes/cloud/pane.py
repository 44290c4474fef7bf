"""The cloud pane: search offers (fitted to a model when one is chosen), rent one, watch the
instances and what they cost, stop / start / destroy / rebid, and read the audit log.

Every provider call runs in a thread worker (controller.py); the next poll is scheduled only
after the last one landed. A provider error is a notification; nothing here raises into Textual.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Static

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.budgets import BudgetUse
from rigdeck.core.cloud.ledger import LedgerInstance
from rigdeck.core.cloud.provider import (
    OFFER_SORTS,
    MissingApiKey,
    Offer,
    OfferSort,
    RentRequest,
)
from rigdeck.core.errors import RigdeckError
from rigdeck.tui import words
from rigdeck.tui.cli_cloud_views import destroy_lines, over_budget_words, per_hour, rent_lines
from rigdeck.tui.cloud_context import usd_so_far
from rigdeck.tui.panes.cloud.audit import AuditLog
from rigdeck.tui.panes.cloud.confirm import CloudConfirmScreen, PromptScreen
from rigdeck.tui.panes.cloud.controller import (
    CloudController,
    CloudOptions,
    InstancesView,
    OffersView,
)
from rigdeck.tui.panes.cloud.instances import InstancesTable
from rigdeck.tui.panes.cloud.jobs_panel import JobsPanel
from rigdeck.tui.panes.cloud.offers import OffersTable
from rigdeck.tui.panes.cloud.rent_dialog import RentChoice, RentDialog

SORT_WORDS = {"price": "$/h", "tflops": "$/TFLOP", "reliability": "reliability",
              "bandwidth": "bandwidth"}  # fmt: skip
WRITE_ACTIONS = frozenset({"rent", "destroy", "stop", "start", "rebid"})
"""Actions `--read-only` removes."""
PENDING_WORDS = {"destroy": "destroying…", "stop": "stopping…", "start": "starting…",
                 "rebid": "rebidding…"}  # fmt: skip


def _import_sdk() -> None:
    """Import the vastai SDK off the event loop. At import it reads ``sys.stdout.encoding``,
    which Textual's print capture lacks; the capture is given the terminal's encoding."""
    if "vastai" in sys.modules:
        return
    if not hasattr(sys.stdout, "encoding"):
        sys.stdout.encoding = getattr(sys.__stdout__, "encoding", None) or "utf-8"  # type: ignore[misc]
    import vastai  # noqa: F401


class CloudPane(Vertical):
    DEFAULT_CSS = """
    CloudPane { height: 1fr; }
    CloudPane #cloud-notice { height: auto; color: $warning; padding: 0 1; }
    CloudPane #cloud-notice.-empty { display: none; }
    CloudPane #cloud-query { height: 1; margin: 0 0; }
    CloudPane #cloud-controls { height: 1; color: $text-muted; }
    CloudPane #cloud-offers { height: 1fr; min-height: 4; }
    CloudPane #cloud-spend { height: 1; color: $text-muted; }
    CloudPane #cloud-instances { height: auto; max-height: 7; }
    CloudPane #cloud-audit { height: 4; border-top: solid $panel; overflow-x: hidden; }
    CloudPane #cloud-audit.-hidden { display: none; }
    CloudPane #cloud-jobs { display: none; }
    CloudPane.-jobs > * { display: none; }
    CloudPane.-jobs > #cloud-jobs { display: block; }
    CloudPane.-no-cloud #cloud-query, CloudPane.-no-cloud #cloud-controls,
    CloudPane.-no-cloud #cloud-offers, CloudPane.-no-cloud #cloud-spend,
    CloudPane.-no-cloud #cloud-instances, CloudPane.-no-cloud #cloud-audit { display: none; }
    """

    BINDINGS = [
        Binding("slash", "search", "Search", id="cloud.search",
                tooltip="Type a Vast query (gpu_ram>=24 num_gpus=1 reliability>0.98); enter runs"),
        Binding("s", "cycle_sort", "Sort", id="cloud.sort",
                tooltip="Sort offers by $/h, $/TFLOP, reliability or download bandwidth"),
        Binding("i", "toggle_interruptible", "Bid", id="cloud.interruptible",
                tooltip="On-demand or interruptible offers (with the current minimum bid)"),
        Binding("m", "choose_model", "Fit model", id="cloud.model",
                tooltip="Fit a GGUF on every offer: verdict, GPU layers, tok/s, $ per Mtok"),
        Binding("r", "rent", "Rent", id="cloud.rent",
                tooltip="Rent the selected offer (asks first, showing what it costs)"),
        Binding("x", "destroy", "Destroy", id="cloud.destroy",
                tooltip="Destroy the selected instance (asks first); done once the provider "
                "reads it gone"),
        Binding("t", "stop", "Stop", id="cloud.stop",
                tooltip="Stop the selected instance (asks first); storage keeps billing"),
        Binding("g", "start", "Start", id="cloud.start",
                tooltip="Start the selected stopped instance (asks first)"),
        Binding("b", "rebid", "Rebid", id="cloud.rebid",
                tooltip="Raise the bid of the selected interruptible instance (asks first)"),
        Binding("R", "reconcile", "Reconcile", id="cloud.reconcile",
                tooltip="Set the ledger against the provider's instance list now"),
        Binding("j", "toggle_jobs", "Jobs", id="cloud.jobs", show=False,
                tooltip="Jobs and the selected job's log and loss chart, or back to offers"),
        Binding("l", "toggle_log", "Log", id="cloud.log", show=False,
                tooltip="Show or hide the audit log of every provider action"),
    ]  # fmt: skip

    class Rented(Message):
        """An instance was created (and is in the ledger)."""

        def __init__(self, row: LedgerInstance) -> None:
            super().__init__()
            self.row = row

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.controller: CloudController | None = None
        self.sort: OfferSort = "price"
        self.interruptible = False
        self.query_text = ""
        self.offers_view: OffersView | None = None
        self.instances_view: InstancesView | None = None
        self.missing: str | None = None
        self.connected = False
        self.searches = 0
        """Searches answered (tests and the bench wait on it)."""
        self.polls = 0
        self._polling = False
        self._poll_again = False
        self._poll_timer: Timer | None = None
        self._pending: dict[int, str] = {}
        self._rent_checking = False
        """A budget check for `r` is in flight: a second `r` would stack a second dialog."""

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("", id="cloud-notice", classes="-empty")
        yield Input(
            placeholder="/ Vast query: gpu_ram>=24 num_gpus=1 reliability>0.98 — enter searches",
            id="cloud-query",
            compact=True,
        )
        yield Static("connecting…", id="cloud-controls")
        yield OffersTable(id="cloud-offers")
        yield Static("", id="cloud-spend")
        yield InstancesTable(id="cloud-instances")
        yield AuditLog(id="cloud-audit")
        yield JobsPanel(id="cloud-jobs")

    def on_mount(self) -> None:
        app: Any = self.app
        options = getattr(app, "cloud_options", None) or CloudOptions()
        self.controller = CloudController(app.settings, bool(getattr(app, "simulate", False)),
                                          options)  # fmt: skip
        self._connect()

    def focus_default(self) -> None:
        found = self.query(OffersTable)
        if found:
            found.first().focus()
        else:  # shown before its children were composed: focus once they are
            self.call_after_refresh(self.focus_default)

    @property
    def read_only(self) -> bool:
        return bool(self.app.settings.telemetry.read_only)  # type: ignore[attr-defined]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in WRITE_ACTIONS and self.read_only)

    # -- workers --------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], Any], done: Callable[[Any], None], what: str,
              failed: Callable[[str], None] | None = None) -> None:  # fmt: skip
        """Run ``fn`` in this worker thread and hand its value (or its error) to the loop."""
        try:
            value = fn()
        except RigdeckError as exc:
            self.app.call_from_thread(self._failed, what, str(exc), failed)
            return
        self.app.call_from_thread(done, value)

    def _failed(self, what: str, message: str, then: Callable[[str], None] | None) -> None:
        self.app.notify(message, title=what, severity="error", timeout=10)
        if then is not None:
            then(message)

    @work(thread=True, exclusive=True, group="cloud-connect", exit_on_error=False)
    def _connect(self) -> None:
        assert self.controller is not None
        _import_sdk()
        try:
            self.controller.open()
        except MissingApiKey as exc:
            self.app.call_from_thread(self._show_missing, str(exc))
            return
        except RigdeckError as exc:
            self.app.call_from_thread(self._show_missing, str(exc))
            return
        self.app.call_from_thread(self._connected)

    def _show_missing(self, message: str) -> None:
        self.missing = message
        self.add_class("-no-cloud")
        self._notice(
            f"Cloud: {message}\n\nThe other panes work without it. To try this pane with no "
            "account and no money: rigdeck --simulate"
        )

    def _notice(self, text: str) -> None:
        notice = self.query_one("#cloud-notice", Static)
        notice.update(Content(text))
        notice.set_class(not text, "-empty")

    def _connected(self) -> None:
        self.connected = True
        self.remove_class("-no-cloud")
        self._show_controls()
        self.run_search()
        self.poll_now()

    # -- offers ---------------------------------------------------------------------------------
    def run_search(self) -> None:
        if not self.connected:
            return
        assert self.controller is not None
        controller = self.controller
        query, sort, bid = self.query_text, self.sort, self.interruptible
        self._controls_note = "searching…"
        self._show_controls()
        self._search_worker(lambda: controller.search(query, sort, bid))

    @work(thread=True, exclusive=True, group="cloud-search", exit_on_error=False)
    def _search_worker(self, fn: Callable[[], OffersView]) -> None:
        self._call(fn, self._show_offers, "offers", self._search_failed)

    def _search_failed(self, message: str) -> None:
        self._controls_note = "search failed"
        self._show_controls()

    def _show_offers(self, view: OffersView) -> None:
        self.offers_view = view
        self.query_one(OffersTable).show(view)
        self.searches += 1
        self._controls_note = f"{len(view.offers)} offers"
        self._show_controls()

    _controls_note = ""

    def _show_controls(self) -> None:
        assert self.controller is not None
        model = self.controller.model_name or "none (m)"
        kind = "interruptible (min bid)" if self.interruptible else "on-demand"
        query = self.query_text or "all"
        line = (
            f"query: {query} · sort: {SORT_WORDS[self.sort]} · {kind} · fit: {model}"
            f" · {self._controls_note}"
        )
        self.query_one("#cloud-controls", Static).update(Content(line))

    @on(Input.Submitted, "#cloud-query")
    def _query_submitted(self, event: Input.Submitted) -> None:
        self.query_text = event.value.strip()
        self.query_one(OffersTable).focus()
        self.run_search()

    def on_key(self, event: Any) -> None:
        if event.key == "escape" and self.query_one("#cloud-query", Input).has_focus:
            self.query_one(OffersTable).focus()
            event.stop()

    def action_search(self) -> None:
        self.query_one("#cloud-query", Input).focus()

    def action_cycle_sort(self) -> None:
        self.sort = OFFER_SORTS[(OFFER_SORTS.index(self.sort) + 1) % len(OFFER_SORTS)]
        self.run_search()

    def action_toggle_interruptible(self) -> None:
        self.interruptible = not self.interruptible
        self.run_search()

    def action_choose_model(self) -> None:
        assert self.controller is not None
        current = self.controller.model_name or ""

        def answered(spec: str | None) -> None:
            if spec is None:
                return
            controller = self.controller
            assert controller is not None
            self._model_worker(lambda: controller.choose_model(spec))

        self.app.push_screen(
            PromptScreen(
                "Fit a model on every offer: a .gguf path, a local model's name, or demo "
                "(empty: no fit column)",
                current,
                placeholder="demo",
            ),
            answered,
        )

    @work(thread=True, exclusive=True, group="cloud-model", exit_on_error=False)
    def _model_worker(self, fn: Callable[[], str | None]) -> None:
        self._call(fn, lambda _name: self.run_search(), "model")

    # -- instances ------------------------------------------------------------------------------
    def poll_now(self) -> None:
        """Reconcile and redraw now, or right after the poll in flight lands."""
        if not self.connected:
            return
        if self._polling:
            self._poll_again = True
            return
        if self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None
        self._polling = True
        assert self.controller is not None
        controller = self.controller
        self._poll_worker(lambda: controller.refresh(with_reconcile=True))

    @work(thread=True, exclusive=True, group="cloud-poll", exit_on_error=False)
    def _poll_worker(self, fn: Callable[[], InstancesView]) -> None:
        self._call(fn, self._show_instances, "instances", self._poll_failed)

    def _poll_failed(self, message: str) -> None:
        self._poll_done()

    def _show_instances(self, view: InstancesView) -> None:
        self.polls += 1
        self.show_instances(view)
        if view.report is not None:
            for row in view.report.outbid:
                self.app.notify(
                    f"instance {row.id} was outbid: stopped, storage still billing "
                    f"{per_hour(row.storage_dph)}; b rebids, x destroys",
                    title="cloud",
                    severity="warning",
                    timeout=10,
                )
            for row in view.report.unaccounted:
                self.app.notify(
                    f"instance {row.id} is unaccounted: created outside rigdeck or lost; "
                    f"it bills {per_hour(row.dph + row.storage_dph)}",
                    title="cloud",
                    severity="warning",
                    timeout=10,
                )
        self._poll_done()

    def _poll_done(self) -> None:
        self._polling = False
        if self._poll_again:
            self._poll_again = False
            self.poll_now()
            return
        assert self.controller is not None
        self._poll_timer = self.set_timer(self.controller.poll_s, self.poll_now)

    def show_instances(self, view: InstancesView) -> None:
        self.instances_view = view
        shown = view
        if self._pending:
            from dataclasses import replace

            shown = replace(
                view,
                rows=tuple(
                    replace(r, state=self._pending[r.id]) if r.id in self._pending else r
                    for r in view.rows
                ),
            )
        assert self.controller is not None
        self.query_one(InstancesTable).show(shown, self.controller.settings.cloud)
        self.query_one(AuditLog).show(view.events)
        s = view.summary
        budget = self.controller.settings.cloud.monthly_budget_usd
        of = f" of {words.money(budget)}" if budget > 0 else ""
        self.query_one("#cloud-spend", Static).update(
            Content(
                f"{len(view.rows)} instances · burning {per_hour(s.burn_dph)} · today "
                f"{words.money(s.today_usd)} · month {words.money(s.month_usd)}{of}"
            )
        )

    def action_reconcile(self) -> None:
        self.poll_now()

    def action_toggle_jobs(self) -> None:
        self.toggle_class("-jobs")
        # Focus once the new layout is applied: a widget still hidden cannot take it.
        if self.has_class("-jobs"):
            self.call_after_refresh(self.query_one(JobsPanel).focus_default)
        else:
            self.call_after_refresh(self.focus_default)

    def action_toggle_log(self) -> None:
        self.query_one(AuditLog).toggle_class("-hidden")

    # -- actions --------------------------------------------------------------------------------
    def _simulated(self) -> bool:
        return self.controller is not None and self.controller.simulated

    def _selected_offer(self) -> Offer | None:
        offer = self.query_one(OffersTable).selected_offer()
        if offer is None:
            self.app.notify("no offer selected: search first (/)", severity="warning")
        return offer

    def _selected_instance(self) -> LedgerInstance | None:
        row = self.query_one(InstancesTable).selected_instance()
        if row is None:
            self.app.notify("no instance selected", severity="warning")
        return row

    def action_rent(self) -> None:
        if not self.connected or self.controller is None or self._rent_checking:
            return
        offer = self._selected_offer()
        if offer is None:
            return
        controller = self.controller
        # A budget already reached refuses before the dialog; the ledger read is a worker's.
        self._rent_checking = True
        self._action_worker(
            controller.over_budget,
            lambda over: self._ask_rent(offer, over),
            "rent",
            lambda _message: self._rent_check_done(),
        )

    def _rent_check_done(self) -> None:
        self._rent_checking = False

    def _refuse_over_budget(self, over: BudgetUse) -> None:
        self.app.notify(over_budget_words(over), title="cloud", severity="warning", timeout=10)

    def _ask_rent(self, offer: Offer, over: BudgetUse | None) -> None:
        self._rent_checking = False
        if over is not None:
            self._refuse_over_budget(over)
            return
        assert self.controller is not None
        controller = self.controller
        request, caps = controller.rent_plan(offer, self.interruptible)
        summary = self.instances_view.summary if self.instances_view else None
        cloud = controller.settings.cloud

        def describe(chosen: RentRequest, project: str) -> list[str]:
            return rent_lines(
                offer,
                disk_gb=chosen.disk_gb,
                bid=chosen.bid,
                max_usd=caps.max_usd,
                max_hours=caps.max_hours,
                month_usd=summary.month_usd if summary else 0.0,
                monthly_budget=cloud.monthly_budget_usd,
                cli=actions.cli_rent(chosen),
                project=project,
            )

        def answered(chosen: RentChoice | None) -> None:
            if chosen is not None:
                self.app.notify(f"renting offer {offer.id}…", title="cloud")
                self._action_worker(
                    lambda: controller.rent(chosen.request, caps, chosen.project),
                    self._rented,
                    "rent",
                    None,
                )

        self.app.push_screen(
            RentDialog(
                f"Rent {offer.num_gpus}x {offer.gpu_name}?",
                request,
                describe,
                simulated=self._simulated(),
            ),
            answered,
        )

    def _rented(self, result: BudgetUse | tuple[LedgerInstance, int | None]) -> None:
        if isinstance(result, BudgetUse):
            self._refuse_over_budget(result)
            return
        row, guard = result
        note = "" if guard is None else f"; budget guard running (pid {guard})"
        tag = f", project {row.project}" if row.project else ""
        self.app.notify(f"rented instance {row.id} ({row.label}{tag}){note}", title="cloud")
        self.post_message(self.Rented(row))
        self.poll_now()

    def _confirm_instance_action(self, action: str, run: Callable[[int], Any]) -> None:
        row = self._selected_instance()
        if row is None or self.instances_view is None:
            return
        usd = usd_so_far(row, self.instances_view.steps, self.instances_view.at)
        lines = destroy_lines(row, usd, action=action, cli=actions.cli_line(action, row.id))

        def answered(yes: bool | None) -> None:
            if yes:
                self._run_on_instance(action, row.id, run)

        self.app.push_screen(
            CloudConfirmScreen(
                f"{action.capitalize()} instance {row.id}?",
                lines,
                confirm=action.capitalize(),
                simulated=self._simulated(),
            ),
            answered,
        )

    def _run_on_instance(self, action: str, instance_id: int, run: Callable[[int], Any]) -> None:
        self._pending[instance_id] = PENDING_WORDS[action]
        if self.instances_view is not None:
            self.show_instances(self.instances_view)

        def finished(_value: Any = None) -> None:
            self._pending.pop(instance_id, None)
            self.poll_now()

        def done(row: LedgerInstance) -> None:
            word = row.state.replace("_", " ")
            self.app.notify(f"instance {instance_id}: {word}", title="cloud")
            finished()

        self._action_worker(lambda: run(instance_id), done, action, finished)

    @work(thread=True, group="cloud-action", exit_on_error=False)
    def _action_worker(self, fn: Callable[[], Any], done: Callable[[Any], None], what: str,
                       failed: Callable[[str], None] | None) -> None:  # fmt: skip
        self._call(fn, done, what, failed)

    def action_destroy(self) -> None:
        if self.controller is not None:
            self._confirm_instance_action("destroy", self.controller.destroy)

    def action_stop(self) -> None:
        if self.controller is not None:
            self._confirm_instance_action("stop", self.controller.stop)

    def action_start(self) -> None:
        if self.controller is not None:
            self._confirm_instance_action("start", self.controller.start)

    def action_rebid(self) -> None:
        row = self._selected_instance()
        if row is None or self.controller is None:
            return
        if not row.interruptible:
            self.app.notify(f"instance {row.id} is on-demand: it has no bid", severity="warning")
            return
        controller = self.controller
        suggested = round((row.bid or row.dph) * 1.3, 4)

        def asked(text: str | None) -> None:
            if text is None:
                return
            try:
                bid = float(text.strip().lstrip("$"))
            except ValueError:
                self.app.notify(f"not a price: {text!r}", severity="error")
                return
            lines = [
                f"Bid ${bid:g}/h for instance {row.id} (was {per_hour(row.bid)}); storage keeps "
                f"billing {per_hour(row.storage_dph)}",
                "A bid over the machine's minimum resumes it; a lower one leaves it stopped",
                f"CLI: {actions.cli_line('change_bid', row.id, bid)}",
            ]

            def answered(yes: bool | None) -> None:
                if yes:
                    self._run_on_instance("rebid", row.id, lambda i: controller.rebid(i, bid))

            self.app.push_screen(
                CloudConfirmScreen(f"Rebid instance {row.id}?", lines, confirm="Rebid",
                                   simulated=self._simulated()),
                answered,
            )  # fmt: skip

        self.app.push_screen(
            PromptScreen(f"New bid for instance {row.id}, $/h:", f"{suggested:g}"), asked
        )

    # -- palette --------------------------------------------------------------------------------
    def system_commands(self) -> Iterable[SystemCommand]:
        for binding in self.BINDINGS:
            if not isinstance(binding, Binding):
                continue
            if binding.action in WRITE_ACTIONS and self.read_only:
                continue
            key = {"slash": "/"}.get(binding.key, binding.key)
            yield SystemCommand(
                f"Cloud: {binding.description}",
                f"{binding.tooltip} (key {key})",
                partial(self._from_palette, binding.action),
            )

    def _from_palette(self, action: str) -> None:
        show = getattr(self.app, "action_show_pane", None)
        if show is not None:
            show("cloud")
        getattr(self, f"action_{action}")()
